"""Manual initial alignment: the moving layer's own napari transform starts the registration."""

from __future__ import annotations

import numpy as np
import pytest

SPACING = (2.0, 1.5)


@pytest.fixture
def setup(make_napari_viewer, blob_pair, tiny_model_2d):
    viewer = make_napari_viewer()
    fixed, moving = blob_pair(shift=(4.0, -6.0))  # the moving blobs sit (4, -6) voxels away
    viewer.add_image(fixed, name="fixed", scale=SPACING)
    viewer.add_image(moving, name="moving", scale=SPACING)
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.add_model("tiny", tiny_model_2d)
    widget.device_combo.value = "cpu"
    widget.refine_check.value = True
    widget.steps_spin.value = 0  # what the start gives, nothing more
    return viewer, widget


def test_the_users_layer_transform_is_the_initial_transform(setup, wait_for_worker, errors):
    viewer, widget = setup
    moving_layer = viewer.layers["moving"]
    # the user drags the moving layer onto the fixed one: (-4, +6) voxels in world units
    shift = np.array([-4.0, 6.0]) * SPACING
    moving_layer.translate = shift
    assert "translate (-8.00, 9.00)" in widget.initial_label.text()
    _, moving, _ = widget._collect()
    expected = np.diag([*SPACING, 1.0])
    expected[:2, 2] = shift
    np.testing.assert_allclose(moving.affine, expected)
    widget.run()
    wait_for_worker(widget)
    assert errors == []
    inner = (slice(8, -8), slice(8, -8))
    fixed = viewer.layers["fixed"].data
    assert widget.result.metrics["ncc_before"] > 0.99  # the start is the user's alignment
    np.testing.assert_allclose(widget.result.warped.data[inner], fixed[inner], atol=0.05)

    # switched off: the registration starts from where the layer was
    widget.initial_check.value = False
    assert "not used" in widget.initial_label.text()
    _, moving, _ = widget._collect()
    np.testing.assert_allclose(moving.affine, np.diag([*SPACING, 1.0]))
    widget.run()
    wait_for_worker(widget)
    assert widget.result.metrics["ncc_before"] < 0.9


def test_reset_puts_the_moving_layer_back(setup):
    viewer, widget = setup
    layer = viewer.layers["moving"]
    layer.translate = (5.0, -3.0)
    layer.rotate = 20.0
    assert "rotate 20.0°" in widget.initial_label.text()
    widget.reset_button.native.click()
    np.testing.assert_allclose(layer.translate, 0.0)
    np.testing.assert_allclose(layer.rotate, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(layer.scale, SPACING)
    assert "identity" in widget.initial_label.text()


def test_nudge_moves_a_3d_layer_live_and_is_the_initial_transform(make_napari_viewer):
    from napari_deepreg import _initial_alignment as initial

    viewer = make_napari_viewer()
    volume = np.random.default_rng(0).random((10, 12, 14)).astype(np.float32)
    viewer.add_image(volume, name="fixed", scale=(2.0, 1.0, 1.0))
    viewer.add_image(volume, name="moving", scale=(2.0, 1.0, 1.0))
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    assert widget.nudge.enabled
    layer = viewer.layers["moving"]
    widget.nudge_shift[0].value = 4.0
    np.testing.assert_allclose(layer.affine.affine_matrix[:3, 3], [4.0, 0.0, 0.0])
    widget.nudge_rotate[0].value = 90.0  # about the first (z) axis: y -> x
    matrix = initial.initial_transform(layer)
    centre = initial.centre_of(layer)
    np.testing.assert_allclose(matrix[:3, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(matrix[:3, :3] @ centre + matrix[:3, 3], centre + [4, 0, 0])
    _, moving, _ = widget._collect()
    np.testing.assert_allclose(moving.affine, matrix @ np.diag([2.0, 1.0, 1.0, 1.0]), atol=1e-12)
    widget.reset_alignment()
    np.testing.assert_allclose(layer.affine.affine_matrix, np.eye(4))
    assert widget.nudge_shift[0].value == 0.0


def test_no_nudge_for_2d(setup):
    _, widget = setup
    assert not widget.nudge.enabled
