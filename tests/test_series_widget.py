"""The Time series widget: known drift corrected, drift plot, Cancel keeps frames, bad input."""

from __future__ import annotations

import numpy as np
import pytest

SPACING = (2.0, 1.5)
DRIFT = np.array([[0.0, 0.0], [0.6, -0.4], [1.2, -0.8], [1.8, -1.2]])  # voxels per frame


@pytest.fixture
def series(make_napari_viewer, blob_pair):
    from scipy import ndimage

    viewer = make_napari_viewer()
    frame, _ = blob_pair(shape=(40, 44))
    stack = np.stack([ndimage.shift(frame, d, order=3) for d in DRIFT]).astype(np.float32)
    viewer.add_image(stack, name="movie", scale=(1.0, *SPACING))
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Time series")
    widget.device_combo.value = "cpu"
    widget.layer_combo.value = viewer.layers["movie"]
    return viewer, widget, stack


def test_known_drift_is_corrected_to_a_fraction_of_a_pixel(series, wait_for_worker, errors):
    viewer, widget, stack = series
    widget.model_combo.value = "affine"
    widget.run()
    wait_for_worker(widget, timeout=240_000)
    assert errors == []
    result = widget.result
    assert result.frames_done == len(DRIFT)
    # U_t = the content's shift, in mm: recovered to a fraction of a pixel
    np.testing.assert_allclose(result.drift_vector_mm / SPACING, DRIFT, atol=0.25)
    layer = viewer.layers["movie corrected"]
    assert layer.data.shape == stack.shape
    np.testing.assert_allclose(layer.scale, (1.0, *SPACING))
    inner = (slice(6, -6), slice(6, -6))
    for t in range(1, len(DRIFT)):
        assert np.abs(layer.data[t][inner] - stack[0][inner]).max() < \
            0.5 * np.abs(stack[t][inner] - stack[0][inner]).max()
    assert [p[0] for p in widget.drift_plot.series["drift"]] == [0, 1, 2, 3]
    assert "frame 3" in widget.metrics_label.text()


def test_cancel_keeps_the_frames_done(series, wait_for_worker, qtbot):
    viewer, widget, _ = series
    widget.run()
    qtbot.waitUntil(lambda: len(widget.drift_plot.series["drift"]) >= 2, timeout=240_000)
    widget.cancel_button.native.click()
    wait_for_worker(widget, timeout=240_000)
    done = widget.result.frames_done
    assert 2 <= done <= len(DRIFT)
    if done < len(DRIFT):
        assert "cancelled" in widget.status_label.value
        assert viewer.layers["movie corrected"].data.shape[0] == done


def test_time_axis_from_axis_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 9, 5), np.float32), name="yxt")
    viewer.dims.axis_labels = ("y", "x", "t")
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Time series")
    widget.layer_combo.value = viewer.layers["yxt"]
    assert widget.time_spin.value == 2


def test_a_time_axis_of_length_1_is_refused(make_napari_viewer, wait_for_worker, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((1, 20, 20)).astype(np.float32), name="one")
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Time series")
    widget.device_combo.value = "cpu"
    widget.layer_combo.value = viewer.layers["one"]
    widget.run()
    wait_for_worker(widget)
    assert "at least 2 frames" in errors[-1]
    assert "failed" in widget.status_label.value and widget.result is None
