"""Landmarks in the Register widget: known transforms recovered, pairing mode, bad input."""

from __future__ import annotations

import numpy as np
import pytest

SPACING = (2.0, 1.5)
ORIGIN = (10.0, -4.0)
# world points inside the 40 x 44 image placed at ORIGIN with SPACING
WORLD = np.array([[20.0, 2.0], [60.0, 8.0], [30.0, 50.0], [70.0, 40.0], [45.0, 25.0],
                  [25.0, 30.0]])
LINEAR = np.array([[1.05, 0.08], [-0.06, 0.97]])
SHIFT = np.array([3.0, -2.0])


@pytest.fixture
def setup(make_napari_viewer, blob_pair):
    viewer = make_napari_viewer()
    fixed, moving = blob_pair()
    viewer.add_image(fixed, name="fixed", scale=SPACING, translate=ORIGIN)
    viewer.add_image(moving, name="moving", scale=SPACING, translate=ORIGIN)
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.device_combo.value = "cpu"
    widget.refine_check.value = True
    widget.steps_spin.value = 0  # the fit alone
    return viewer, widget


def _points(viewer, widget, fixed_world, moving_world, **kwargs):
    viewer.add_points(fixed_world, name="fp", **kwargs.get("fixed", {}))
    viewer.add_points(moving_world, name="mp", **kwargs.get("moving", {}))
    widget.fixed_points_combo.value = viewer.layers["fp"]
    widget.moving_points_combo.value = viewer.layers["mp"]


def test_landmark_models_are_offered_with_a_card(setup):
    _, widget = setup
    assert {"landmarks-rigid", "landmarks-similarity", "landmarks-affine",
            "landmarks-tps"} <= set(widget.model_combo.choices)
    widget.model_combo.value = "landmarks-tps"
    assert "tps transform" in widget.card_text.toPlainText()


def test_points_under_a_known_affine_give_that_affine(setup, wait_for_worker, errors):
    viewer, widget = setup
    _points(viewer, widget, WORLD, WORLD @ LINEAR.T + SHIFT)
    widget.model_combo.value = "landmarks-affine"
    widget.holdout_spin.value = 1
    widget.run()
    wait_for_worker(widget)
    assert errors == []
    fixed = widget.result.fixed
    world = np.eye(3)
    world[:2, :2], world[:2, 2] = LINEAR, SHIFT
    expected = np.linalg.inv(fixed.affine) @ world @ fixed.affine  # fixed voxel -> moving voxel
    np.testing.assert_allclose(widget.result.affine, expected, atol=1e-6)
    assert widget.result.metrics["tre_holdout_after_mm"] < 1e-4
    assert "held-out TRE" in widget.metrics_label.text()


def test_points_paired_by_label_in_any_order(setup, wait_for_worker, errors):
    viewer, widget = setup
    order = [3, 0, 5, 1, 4, 2]
    moving = (WORLD @ LINEAR.T + SHIFT)[order]
    _points(viewer, widget, WORLD, moving,
            fixed={"features": {"label": list("abcdef")}},
            moving={"features": {"label": [list("abcdef")[i] for i in order]}})
    widget.model_combo.value = "landmarks-affine"
    widget.run()
    wait_for_worker(widget)
    assert errors == [] and widget.result.metrics["tre_after_mm"] < 1e-4


def test_thin_plate_spline_passes_through_its_landmarks(setup, wait_for_worker, errors):
    viewer, widget = setup
    # fixed points on voxel centres; moving points bent non-linearly
    voxels = np.array([[5, 5], [5, 38], [34, 5], [34, 38], [20, 22], [12, 30], [28, 14]], float)
    fixed_world = voxels * SPACING + ORIGIN
    bend = np.stack([np.sin(voxels[:, 1] / 7.0), np.cos(voxels[:, 0] / 5.0)], axis=1) * 2.0
    moving_world = (voxels + bend) * SPACING + ORIGIN
    _points(viewer, widget, fixed_world, moving_world)
    widget.model_combo.value = "landmarks-tps"
    widget.run()
    wait_for_worker(widget)
    assert errors == []
    u = widget.result.displacement
    at = tuple(voxels.astype(int).T)
    mapped = voxels + np.stack([u[0][at], u[1][at]], axis=1)
    np.testing.assert_allclose(mapped, voxels + bend, atol=1e-3)  # exactly through each pair


@pytest.mark.parametrize(("fixed_world", "moving_world", "model", "message"), [
    (WORLD, WORLD[:5], "landmarks-affine", "counts must be equal"),
    (WORLD[:2], WORLD[:2], "landmarks-affine", "needs at least 3 point pairs"),
    (np.array([[20.0, 2.0], [30.0, 12.0], [40.0, 22.0], [50.0, 32.0]]),
     np.array([[20.0, 2.0], [30.0, 12.0], [40.0, 22.0], [50.0, 32.0]]) + 1.0,
     "landmarks-affine", "collinear"),
])
def test_bad_pairs_are_refused_with_a_notification(setup, errors, fixed_world, moving_world,
                                                   model, message):
    viewer, widget = setup
    _points(viewer, widget, fixed_world, moving_world)
    widget.model_combo.value = model
    widget.run()
    assert widget.worker is None and widget.result is None
    assert message in errors[-1]
    assert "not started" in widget.status_label.value


def test_a_landmark_model_without_points_says_what_to_pick(setup, errors):
    _, widget = setup
    widget.model_combo.value = "landmarks-rigid"
    widget.run()
    assert "Points layer" in errors[-1]


def test_pairing_mode_alternates_numbers_pairs_and_reruns(setup, qtbot, wait_for_worker,
                                                          errors):
    viewer, widget = setup
    widget.model_combo.value = "landmarks-affine"
    fixed_pts, moving_pts = widget.new_landmark_layers()
    assert widget.pairing.active and viewer.layers.selection.active == fixed_pts
    assert fixed_pts.mode == "add"
    moving_world = WORLD @ LINEAR.T + SHIFT
    for f, m in zip(WORLD[:3], moving_world[:3]):
        fixed_pts.add(f)
        assert viewer.layers.selection.active == moving_pts  # the next click lands there
        moving_pts.add(m)
        assert viewer.layers.selection.active == fixed_pts
    assert list(fixed_pts.features["label"]) == [1, 2, 3]
    assert list(moving_pts.features["label"]) == [1, 2, 3]
    assert fixed_pts.text.string.format == "{label}"
    # three pairs: the debounced re-run fits them (the fit alone, instant)
    qtbot.waitUntil(lambda: widget.result is not None, timeout=20_000)
    wait_for_worker(widget)
    first = widget.result
    # a fourth pair changes the result
    fixed_pts.add(WORLD[3])
    moving_pts.add(moving_world[3] + 4.0)  # a bad pair on purpose
    qtbot.waitUntil(lambda: widget.result is not first, timeout=20_000)
    wait_for_worker(widget)
    bad = widget.result
    assert bad.metrics["tre_after_mm"] > 0.5
    # deleting the fixed point of pair 4 deletes its partner, and the result updates
    fixed_pts.selected_data = {3}
    fixed_pts.remove_selected()
    assert list(moving_pts.features["label"]) == [1, 2, 3]
    qtbot.waitUntil(lambda: widget.result is not bad, timeout=20_000)
    wait_for_worker(widget)
    assert widget.result.metrics["tre_after_mm"] < 1e-4
    # moving a point re-runs too
    last = widget.result
    moved = np.array(moving_pts.data)
    moved[0] += 1.0
    moving_pts.data = moved
    qtbot.waitUntil(lambda: widget.result is not last, timeout=20_000)
    wait_for_worker(widget)
    assert errors == []


def test_pairing_in_3d_on_the_current_slice(make_napari_viewer, qtbot, wait_for_worker, errors):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    volume = rng.random((12, 20, 24)).astype(np.float32)
    viewer.add_image(volume, name="fixed", scale=(3.0, 1.0, 1.0))
    viewer.add_image(volume, name="moving", scale=(3.0, 1.0, 1.0), translate=(0.0, 2.0, -1.0))
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.device_combo.value = "cpu"
    widget.model_combo.value = "landmarks-rigid"
    fixed_pts, moving_pts = widget.new_landmark_layers()
    assert fixed_pts.ndim == 3
    pairs = []
    for z, y, x in [(3, 4, 5), (3, 15, 6), (6, 10, 20), (9, 3, 18)]:
        viewer.dims.set_point(0, z * 3.0)  # the slice the user looks at, in world units
        fixed_world = np.array([z * 3.0, y, x])
        fixed_pts.add(fixed_world)
        moving_pts.add(fixed_world + (0.0, 2.0, -1.0))
        pairs.append(fixed_world)
    qtbot.waitUntil(lambda: widget.result is not None, timeout=30_000)
    wait_for_worker(widget)
    assert errors == []
    # the moving layer sits (0, 2, -1) away in the world: a shift in fixed voxels, and the
    # warped image is the fixed one again
    expected = np.eye(4)
    expected[:3, 3] = (0.0, 2.0, -1.0)
    np.testing.assert_allclose(widget.result.affine, expected, atol=1e-6)
    np.testing.assert_allclose(widget.result.warped.data[:, 2:-2, 2:-2], volume[:, 2:-2, 2:-2],
                               atol=1e-4)
