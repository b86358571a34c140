"""The Register widget on multi-channel layers: register on one channel (or the mean), warp all."""

from __future__ import annotations

import numpy as np
import pytest

SPACING = (2.0, 1.5)
SHIFT = (2.0, -3.0)  # voxels, the same for every channel
SHAPE = (40, 44)


def _spots(shape=SHAPE) -> np.ndarray:
    """A second channel unlike the blobs: three small spots elsewhere."""
    y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    spots = [(10.0, 30.0, 6.0), (28.0, 12.0, 8.0), (30.0, 32.0, 5.0)]
    return sum(np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / s) for cy, cx, s in spots
               ).astype(np.float32)


@pytest.fixture
def channels(make_napari_viewer, blob_pair):
    """Fixed: both channels in place; moving: both under SHIFT, channel axis labelled 'c'."""
    from scipy import ndimage

    viewer = make_napari_viewer()
    blobs, _ = blob_pair(shape=SHAPE)
    fixed = np.stack([blobs, _spots()])
    moving = np.stack([ndimage.shift(c, SHIFT, order=3) for c in fixed]).astype(np.float32)
    viewer.add_image(fixed, name="fixed", scale=(1.0, *SPACING), translate=(0.0, 10.0, -4.0),
                     axis_labels=("c", "y", "x"))
    viewer.add_image(moving, name="moving", scale=(1.0, *SPACING), translate=(0.0, 10.0, -4.0),
                     axis_labels=("c", "y", "x"))
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.reset_choices()
    widget.fixed_combo.value = viewer.layers["fixed"]
    widget.moving_combo.value = viewer.layers["moving"]
    widget.model_combo.value = "affine"
    widget.device_combo.value = "cpu"
    return viewer, widget, fixed, moving


def _residual_shift(reference: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The shift (voxels) still between ``image`` and ``reference``, sub-pixel."""
    from skimage.registration import phase_cross_correlation

    inner = (slice(6, -6), slice(6, -6))
    shift, _, _ = phase_cross_correlation(reference[inner], image[inner], upsample_factor=20,
                                          normalization=None)
    return shift


def _check_all_channels_warped(viewer, widget, fixed, moving):
    layer = viewer.layers["moving warped"]
    assert layer.data.shape == moving.shape  # channel axis where it was
    np.testing.assert_allclose(layer.scale, (1.0, *SPACING))
    np.testing.assert_allclose(layer.translate, (0.0, 10.0, -4.0))
    before = _residual_shift(fixed[1], moving[1])
    np.testing.assert_allclose(-before, SHIFT, atol=0.1)  # the known shift, as measured
    for c in range(2):  # every channel moved back by the one transform
        assert np.abs(_residual_shift(fixed[c], layer.data[c])).max() < 0.3
    # the read-out and QA layers come from the registered channel, on the spatial grid
    assert widget.result.warped.shape == SHAPE
    assert viewer.layers["moving grid"].ndim == 2
    assert "NCC" in widget.metrics_label.text()


def test_register_on_channel_0_warps_channel_1_alike(channels, wait_for_worker, errors):
    viewer, widget, fixed, moving = channels
    assert widget.spatial_ndim(viewer.layers["fixed"]) == 2
    assert "2 channels on axis 0" in widget.channel_label.text()
    widget.channel_spin.value = 0
    widget.run()
    wait_for_worker(widget, timeout=240_000)
    assert errors == []
    _check_all_channels_warped(viewer, widget, fixed, moving)


def test_register_on_the_mean(channels, wait_for_worker, errors):
    viewer, widget, fixed, moving = channels
    widget.channel_on_combo.value = "mean"
    assert not widget.channel_spin.enabled
    widget.run()
    wait_for_worker(widget, timeout=240_000)
    assert errors == []
    _check_all_channels_warped(viewer, widget, fixed, moving)


def test_single_channel_fixed_and_axis_from_the_picker(make_napari_viewer, blob_pair, errors):
    viewer = make_napari_viewer()
    blobs, shifted = blob_pair(shape=SHAPE)
    viewer.add_image(blobs, name="fixed")
    viewer.add_image(np.stack([shifted, shifted, shifted]), name="moving")  # no labels
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.reset_choices()
    widget.fixed_combo.value = viewer.layers["fixed"]
    widget.moving_combo.value = viewer.layers["moving"]
    assert widget.channel_axis(viewer.layers["moving"]) is None  # a 3D volume by default
    widget.channel_axis_combo.value = "0"
    widget.channel_spin.value = 2
    fixed, moving, options = widget._collect()
    assert fixed.shape == SHAPE and len(moving) == 3 and moving[2].shape == SHAPE
    assert widget._channels == {"channel": 2, "axis": 0}
    assert errors == []


def test_channel_out_of_range_is_refused(channels, wait_for_worker, errors):
    viewer, widget, _, moving = channels
    widget.channel_spin.value = 5
    widget.run()
    assert errors and "channel: expected an index in [0, 1]" in errors[-1]
    assert "has 2 channels" in errors[-1] and "got 5" in errors[-1]
    assert widget.worker is None and "not started" in widget.status_label.value
    assert "moving warped" not in viewer.layers
    np.testing.assert_array_equal(viewer.layers["moving"].data, moving)


def test_bad_channel_layouts_are_refused(make_napari_viewer, blob_pair, errors):
    viewer = make_napari_viewer()
    blobs, shifted = blob_pair(shape=SHAPE)
    viewer.add_image(blobs, name="flat")
    viewer.add_image(shifted, name="flat moving")
    viewer.add_image(np.stack([blobs] * 4), name="volume")  # (Z, Y, X): no channel axis
    viewer.add_image(np.stack([shifted] * 2), name="two channels", axis_labels=("ch", "y", "x"))
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.reset_choices()
    # a channel axis on a 2D layer
    widget.fixed_combo.value = viewer.layers["flat"]
    widget.moving_combo.value = viewer.layers["flat moving"]
    widget.channel_axis_combo.value = "0"
    widget.run()
    assert "a channel axis needs a 3D (C, Y, X) or 4D (C, Z, Y, X) layer" in errors[-1]
    # fixed and moving of different spatial dimensionality
    widget.channel_axis_combo.value = "from axis labels"
    widget.fixed_combo.value = viewer.layers["volume"]
    widget.moving_combo.value = viewer.layers["two channels"]
    widget.run()
    assert "is 3D (4, 40, 44) per channel but moving 'two channels' is 2D" in errors[-1]
    assert widget.worker is None and "moving warped" not in viewer.layers
    assert len(errors) == 2
