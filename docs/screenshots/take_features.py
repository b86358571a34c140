"""Screenshots of the README's landmark, initial-alignment, time-series and channels sections.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots/take_features.py \
        landmarks alignment series channels

Each part opens napari on the 2D/3D sample pair (or a synthetic time series), drives the Register
widget as a user would and saves ``docs/screenshots/<part>.png`` (the whole window).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from napari_deepreg.demo import pump_until

HERE = Path(__file__).parent


def _wait(app, predicate, timeout=120.0):
    return pump_until(app, predicate, timeout)


def _viewer():
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-deepreg", show=True)
    viewer.window._qt_window.resize(1500, 950)
    return viewer, QApplication.instance()


def _fixed_only():
    """A viewer holding only the 2D sample's fixed layer; also that layer and its data."""
    viewer, app = _viewer()
    viewer.open_sample("napari-deepreg", "brain_2d")
    fixed = viewer.layers["fixed"]
    for name in [ly.name for ly in viewer.layers if ly.name != "fixed"]:
        viewer.layers.remove(name)
    return viewer, app, fixed, np.asarray(fixed.data, dtype=np.float32)


def landmarks() -> None:
    from scipy import ndimage

    viewer, app, fixed, data = _fixed_only()
    # the moving image: the fixed one under a known affine (voxel indices)
    linear = np.array([[0.95, 0.12], [-0.10, 1.02]])
    shift = np.array([6.0, -4.0])
    moving = ndimage.affine_transform(data, linear, shift, order=1)
    viewer.add_image(moving, name="moving", scale=fixed.scale, translate=fixed.translate)
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.reset_choices()
    widget.fixed_combo.value, widget.moving_combo.value = fixed, viewer.layers["moving"]
    widget.model_combo.value = "landmarks-affine"
    widget.preset_combo.value = "fast"
    widget.holdout_spin.value = 1
    widget.landmarks_box.expand(animate=False)
    fp_layer, mp_layer = widget.new_landmark_layers()
    shape = np.array(data.shape)
    fixed_vox = np.array([[0.3, 0.3], [0.3, 0.7], [0.7, 0.35], [0.65, 0.7], [0.5, 0.5]]) * shape
    moving_vox = np.linalg.solve(linear, (fixed_vox - shift).T).T  # fixed = linear @ m + shift
    scale, origin = np.asarray(fixed.scale), np.asarray(fixed.translate)
    for f, m in zip(fixed_vox, moving_vox):
        fp_layer.add(f * scale + origin)
        mp_layer.add(m * scale + origin)
    _wait(app, lambda: widget.result is not None and widget.worker is None)
    _wait(app, lambda: False, 1.0)
    # fixed and its points beside moving and its points
    order = ["fixed", "fixed landmarks", "moving", "moving landmarks"]
    for name in [ly.name for ly in viewer.layers if ly.name not in order]:
        viewer.layers.remove(name)  # the result's layers: the read-out says what it did
    order = ["fixed", "fixed landmarks", "moving", "moving landmarks"]
    for i, name in enumerate(order):
        viewer.layers.move(viewer.layers.index(name), i)
    viewer.layers["moving"].visible = True
    viewer.layers["fixed"].colormap = "gray"
    viewer.canvas.grid.enabled, viewer.canvas.grid.stride = True, 2
    viewer.reset_view()
    viewer.layers.selection.active = fp_layer
    _wait(app, lambda: False, 1.0)
    viewer.screenshot(str(HERE / "landmarks.png"), canvas_only=False)
    viewer.close()


def alignment() -> None:
    viewer, app = _viewer()
    viewer.open_sample("napari-deepreg", "brain_3d")
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.reset_choices()
    widget.alignment_box.expand(animate=False)
    widget.nudge_shift[1].value = 6.0
    widget.nudge_rotate[0].value = 10.0
    viewer.layers["fixed"].colormap = "green"
    viewer.layers["moving"].colormap = "magenta"
    viewer.layers["moving"].blending = "additive"
    _wait(app, lambda: False, 1.0)
    widget.scroll_area.ensureWidgetVisible(widget.alignment_box)
    _wait(app, lambda: False, 0.5)
    viewer.screenshot(str(HERE / "initial_alignment.png"), canvas_only=False)
    viewer.close()


def series() -> None:
    from scipy import ndimage

    viewer, app = _viewer()
    viewer.open_sample("napari-deepreg", "brain_2d")
    frame = np.asarray(viewer.layers["fixed"].data, dtype=np.float32)
    scale = tuple(viewer.layers["fixed"].scale)
    viewer.layers.clear()
    drift = [(0.4 * t + np.sin(t / 2.0), -0.3 * t) for t in range(12)]  # voxels
    stack = np.stack([ndimage.shift(frame, d, order=1) for d in drift])
    viewer.add_image(stack, name="movie", scale=(1.0, *scale))
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Time series")
    widget.layer_combo.value = viewer.layers["movie"]
    widget.run()
    _wait(app, lambda: widget.worker is None, 600)
    viewer.layers["movie"].visible = False
    viewer.dims.set_point(0, 11)
    _wait(app, lambda: False, 1.0)
    viewer.screenshot(str(HERE / "time_series.png"), canvas_only=False)
    viewer.close()


def channels() -> None:
    from scipy import ndimage

    viewer, app, fixed, data = _fixed_only()
    edges = ndimage.gaussian_gradient_magnitude(data, 1.5)  # a second, different channel
    edges *= data.max() / edges.max()
    linear = np.array([[0.97, 0.08], [-0.08, 0.97]])
    shift = np.array([5.0, -6.0])
    moving = np.stack([ndimage.affine_transform(c, linear, shift, order=1) for c in (data, edges)])
    viewer.add_image(moving, name="moving (2 channels)", scale=(1.0, *fixed.scale),
                     translate=(0.0, *fixed.translate), axis_labels=("c", "y", "x"))
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.reset_choices()
    widget.fixed_combo.value = fixed
    widget.moving_combo.value = viewer.layers["moving (2 channels)"]
    widget.model_combo.value = "affine"
    widget.channel_spin.value = 0
    widget.channels_box.expand(animate=False)
    widget.run()
    _wait(app, lambda: widget.result is not None and widget.worker is None, 600)
    viewer.dims.set_point(0, 1)  # the second channel, warped by the first one's transform
    _wait(app, lambda: False, 1.0)
    widget.scroll_area.ensureWidgetVisible(widget.channels_box)
    _wait(app, lambda: False, 0.5)
    viewer.screenshot(str(HERE / "channels.png"), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    parts = {"landmarks": landmarks, "alignment": alignment, "series": series,
             "channels": channels}
    for part in sys.argv[1:]:
        parts[part]()
