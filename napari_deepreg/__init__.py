"""napari-deepreg: deep-learning image registration inside napari.

Importing this package is cheap: torch, napari and Qt load only when a widget,
reader, writer or sample is first used (see ``napari.yaml``).
"""

__version__ = "0.1.0"
