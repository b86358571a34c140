"""deepreg_core: the headless PyTorch core of napari-deepreg.

It never imports napari, Qt or magicgui. See ``docs/conventions.md`` for the
axis order, units and direction of displacement fields used everywhere.
"""

__version__ = "0.1.0"
