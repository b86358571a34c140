"""The Register widget through the manifest: runs, outputs, re-runs, cancel, errors, exports."""

from __future__ import annotations

import numpy as np
import pytest

SPACING = (2.0, 1.5)


@pytest.fixture
def setup(make_napari_viewer, blob_pair, tiny_model_2d):
    viewer = make_napari_viewer()
    fixed, moving = blob_pair()
    viewer.add_image(fixed, name="fixed", scale=SPACING, translate=(10.0, -4.0))
    viewer.add_image(moving, name="moving", scale=SPACING, translate=(10.0, -4.0))
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.add_model("tiny", tiny_model_2d)
    return viewer, widget


def _user_arrays(viewer):
    return {ly.name: np.array(ly.data, copy=True) for ly in viewer.layers}


def _output_names(viewer):
    return sorted(ly.name for ly in viewer.layers if "deepreg_result" in ly.metadata)


def test_defaults_and_options(setup):
    viewer, widget = setup
    assert widget.fixed_combo.value == viewer.layers["fixed"]
    assert widget.moving_combo.value == viewer.layers["moving"]
    assert widget.model_combo.value == "tiny"
    viewer.add_image(np.zeros((2, 3, 4, 5)), name="4d")
    viewer.add_image(np.zeros((2, 4, 5)), name="field", metadata={"deepreg_field_units": "voxels"})
    offered = [layer.name for layer in widget.fixed_combo.choices if layer is not None]
    assert offered == ["fixed", "moving"]
    assert "tiny" in widget.card_text.toPlainText()
    widget.refine_check.value = True
    widget.steps_spin.value = 7
    widget.reg_default_check.value = False
    widget.reg_spin.value = 0.5
    widget.device_combo.value = "cpu"
    fixed, moving, options = widget._collect()
    assert fixed.spacing == SPACING and fixed.origin.tolist() == [10.0, -4.0]
    assert options["refine_steps"] == 7 and options["regularization"] == 0.5
    assert options["device"] == "cpu" and options["model"] is not None
    assert widget.reg_spin.enabled


def test_registration_runs_and_reruns_in_place(setup, wait_for_worker, errors):
    viewer, widget = setup
    before = _user_arrays(viewer)
    widget.keep_combo.value = "warped + QA maps"
    widget.refine_check.value = True
    widget.steps_spin.value = 40
    widget.run_button.native.click()
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    wait_for_worker(widget)
    assert errors == []
    result = widget.result
    roles = ("warped", "grid", "jacobian", "folds", "saliency", "checkerboard", "difference", "|u|")
    expected = sorted(f"moving {r}" for r in roles)
    assert _output_names(viewer) == expected
    # the outputs sit in the fixed layer's physical space
    for name in expected:
        np.testing.assert_allclose(viewer.layers[name].translate, [10.0, -4.0])
    np.testing.assert_allclose(viewer.layers["moving warped"].scale, SPACING)
    # the Jacobian layer is the determinant of the result's field; folds match its fraction
    import torch

    from deepreg_core.metrics import jacobian_determinant

    jacobian = jacobian_determinant(torch.from_numpy(result.displacement)[None])[0, 0].numpy()
    np.testing.assert_allclose(viewer.layers["moving jacobian"].data, jacobian, atol=1e-5)
    assert viewer.layers["moving folds"].data.mean() == pytest.approx(result.folding_fraction)
    # refinement aligned the shifted blobs
    assert result.metrics["ncc_after"] > result.metrics["ncc_before"]
    assert "NCC" in widget.metrics_label.text() and "→" in widget.metrics_label.text()
    assert viewer.layers["moving warped"].colormap.name == "magenta"
    assert viewer.layers["fixed"].colormap.name == "green"
    for name, data in before.items():  # user layers are never modified
        np.testing.assert_array_equal(viewer.layers[name].data, data)

    warped_layer = viewer.layers["moving warped"]
    count = len(viewer.layers)
    widget.steps_spin.value = 5
    widget.run()
    wait_for_worker(widget)
    assert len(viewer.layers) == count  # replaced, not piled up
    assert viewer.layers["moving warped"] is warped_layer
    np.testing.assert_allclose(warped_layer.data, widget.result.warped.data)
    assert widget.result is not result


def test_cancel_leaves_user_layers_and_viewer_usable(setup, wait_for_worker, qtbot, errors):
    viewer, widget = setup
    before = _user_arrays(viewer)
    widget.refine_check.value = True
    widget.steps_spin.value = 10_000
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=30_000)
    widget.cancel_button.native.click()
    wait_for_worker(widget)
    assert "cancelled" in widget.status_label.value
    assert widget.result is None and _output_names(viewer) == []
    for name, data in before.items():
        np.testing.assert_array_equal(viewer.layers[name].data, data)
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    # still usable: a new run finishes
    widget.steps_spin.value = 3
    widget.run()
    wait_for_worker(widget)
    assert widget.result is not None and errors == []


def test_labels_and_points_give_dice_and_tre(setup, wait_for_worker, errors):
    viewer, widget = setup
    fixed, moving = viewer.layers["fixed"].data, viewer.layers["moving"].data
    viewer.add_labels((fixed > 0.5).astype(np.int32), name="fixed seg", scale=SPACING,
                      translate=(10.0, -4.0))
    viewer.add_labels((moving > 0.5).astype(np.int32), name="moving seg", scale=SPACING,
                      translate=(10.0, -4.0))
    centre = np.array([20.0, 22.0])
    viewer.add_points([centre], name="fixed pts", scale=SPACING, translate=(10.0, -4.0))
    viewer.add_points([centre + (2.0, -3.0)], name="moving pts", scale=SPACING,
                      translate=(10.0, -4.0))
    widget.fixed_labels_combo.value = viewer.layers["fixed seg"]
    widget.moving_labels_combo.value = viewer.layers["moving seg"]
    widget.fixed_points_combo.value = viewer.layers["fixed pts"]
    widget.moving_points_combo.value = viewer.layers["moving pts"]
    widget.refine_check.value = True
    widget.steps_spin.value = 40
    widget.run()
    wait_for_worker(widget)
    assert errors == []
    metrics = widget.result.metrics
    assert metrics["tre_before_mm"] == pytest.approx(np.hypot(2 * 2.0, 3 * 1.5), rel=1e-4)
    assert metrics["tre_after_mm"] < metrics["tre_before_mm"]
    assert metrics["dice_after"] > metrics["dice_before"]
    assert "Dice" in widget.metrics_label.text() and "TRE" in widget.metrics_label.text()
    assert {"moving warped labels", "moving warped points"} <= set(_output_names(viewer))


def test_bad_inputs_are_notified(setup, make_napari_viewer, wait_for_worker, errors):
    viewer, widget = setup
    widget.moving_combo.value = viewer.layers["fixed"]
    widget.run_button.native.click()
    assert "same layer" in errors[-1]
    viewer.add_image(np.zeros((4, 40, 44), np.float32), name="volume")
    widget.moving_combo.value = viewer.layers["volume"]
    widget.run()
    assert "pick two 2D or two 3D" in errors[-1]
    bad = np.array(viewer.layers["moving"].data)
    bad[3, 3] = np.nan
    viewer.add_image(bad, name="nan")
    widget.moving_combo.value = viewer.layers["nan"]
    widget.run()
    assert "NaN" in errors[-1] and widget.worker is None
    widget.moving_combo.value = viewer.layers["moving"]
    viewer.add_points([[1.0, 1.0]], name="pts")
    widget.fixed_points_combo.value = viewer.layers["pts"]
    widget.run()
    assert "moving points" in errors[-1]
    widget.fixed_points_combo.value = None
    # an error raised inside the core, in the worker thread, arrives as a message too
    widget.add_model("missing", "/no/such/model/folder")
    widget.run()
    wait_for_worker(widget)
    assert "zoo name" in errors[-1] and widget.run_button.enabled
    # nothing chosen at all
    empty_viewer = make_napari_viewer()
    _, empty = empty_viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    empty.run()
    assert "no layer chosen" in errors[-1]
    assert all("Traceback" not in message for message in errors)


def test_preset_and_the_guard_notification(setup, wait_for_worker, errors, monkeypatch):
    """A network that makes the pair worse: every preset falls back and says so as information."""
    import torch
    from napari.utils import notifications

    from deepreg_core.models import ModelConfig, build_model

    viewer, widget = setup
    warnings: list[str] = []
    infos: list[str] = []
    monkeypatch.setattr(notifications, "show_warning", lambda m: warnings.append(str(m)))
    monkeypatch.setattr(notifications, "show_info", lambda m: infos.append(str(m)))
    bad = build_model(ModelConfig(kind="deformable", ndim=2, features=[4, 8], diffeomorphic=False))
    with torch.no_grad():
        bad.head.conv.weight.zero_()
        bad.head.conv.bias.fill_(6.0)  # a constant 6-voxel shift, whatever the images
    widget.add_model("shifter", bad)
    widget.model_combo.value = "shifter"
    assert widget.preset_combo.value == "auto" and not widget.refine_check.value
    widget.preset_combo.value = "fast"
    assert not widget.refine_affine_check.enabled  # nothing to refine with 'fast'
    _, _, options = widget._collect()
    assert options["preset"] == "fast" and options["refine_steps"] is None
    widget.run_button.native.click()
    wait_for_worker(widget)
    assert errors == []
    # 'fast' falls back too: the shifted field matched worse than its start, so the start is
    # the result, the user is told why, and nothing is flagged worse than the input
    assert widget.result.metrics["worse_than_input"] == 0.0
    assert widget.result.metrics["mi_after"] >= widget.result.metrics["mi_before"] * 0.99
    assert warnings == []
    assert len(infos) == 1 and "matched worse than its start" in infos[0]
    assert "worse than the unregistered pair" not in widget.metrics_label.text()
    assert "not used)" in widget.metrics_label.text()  # the read-out's model says so too

    infos.clear()
    widget.preset_combo.value = "auto"
    assert widget.refine_affine_check.enabled
    widget.run_button.native.click()
    wait_for_worker(widget)
    assert errors == []
    assert widget.result.metrics["worse_than_input"] == 0.0
    assert widget.result.metrics["mi_after"] >= widget.result.metrics["mi_before"] * 0.99
    assert warnings == []  # the kept result is not worse than the input: no warning
    assert len(infos) == 1 and "started from the" in infos[0]
    assert widget.status_label.value == "done"
