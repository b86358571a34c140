"""What a napari user checks: notifications, contrast, layer counts, their own layers, dock sizes,
Register -> Inspect, model lists, File -> Open and the sample pair (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_register_results import _known_result

SPACING = (2.0, 1.5)


@pytest.fixture
def pair(make_napari_viewer, blob_pair, tiny_model_2d):
    viewer = make_napari_viewer()
    fixed, moving = blob_pair()
    viewer.add_image(fixed, name="fixed", scale=SPACING)
    viewer.add_image(moving, name="moving", scale=SPACING)
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    widget.add_model("tiny", tiny_model_2d)
    widget.refine_check.value = True
    widget.steps_spin.value = 3
    return viewer, widget


@pytest.fixture
def known(make_napari_viewer, blob_pair):
    """``known(shift)``: a viewer with fixed/moving layers, Register showing a constant-shift
    result (no compute); returns ``(viewer, register, result)``."""
    from napari_deepreg._layers import layer_to_image

    viewer = make_napari_viewer()
    fixed, moving = blob_pair()
    fixed_layer = viewer.add_image(fixed, name="fixed", scale=SPACING)
    moving_layer = viewer.add_image(moving, name="moving", scale=SPACING)
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    image = layer_to_image(fixed_layer, "fixed")

    def show(shift, keep="warped + grid"):
        widget.keep_combo.value = keep
        result = _known_result(image, moving, shift)
        widget.show_result(result, fixed_layer, moving_layer)
        return viewer, widget, result

    return show


def _outputs(viewer):
    return [ly.name for ly in viewer.layers if "deepreg_result" in ly.metadata]


def test_constant_images_are_refused_with_a_notification(pair, errors):
    viewer, widget = pair
    widget.status_label.value = "done"  # as after an earlier run
    viewer.add_image(np.zeros((40, 44), np.float32), name="blank")
    widget.moving_combo.value = viewer.layers["blank"]
    widget.run_button.native.click()
    assert "moving 'blank' is constant (every voxel is 0)" in errors[-1]
    assert widget.worker is None and _outputs(viewer) == []
    assert widget.status_label.value == "not started: see the notification"
    viewer.add_image(np.full((40, 44), 3.0, np.float32), name="flat")
    widget.moving_combo.value = viewer.layers["moving"]
    widget.fixed_combo.value = viewer.layers["flat"]
    widget.run()
    assert "fixed 'flat' is constant (every voxel is 3)" in errors[-1] and _outputs(viewer) == []


def test_a_failed_run_clears_the_last_readout(pair, wait_for_worker, errors):
    viewer, widget = pair
    widget.run()
    wait_for_worker(widget)
    assert "NCC" in widget.metrics_label.text() and widget.status_label.value == "done"
    widget.add_model("missing", "/no/such/model/folder")
    widget.run()
    wait_for_worker(widget)
    assert "zoo name" in errors[-1]
    assert widget.metrics_label.text() == ""
    assert widget.status_label.value == "failed: see the notification"
    assert widget.progress.value == 0


def test_cancel_message_matches_the_bar(pair, wait_for_worker, qtbot):
    _, widget = pair
    widget.steps_spin.value = 10_000
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=30_000)
    widget.cancel()
    wait_for_worker(widget)
    shown = round(100 * widget.progress.value / widget.progress.max)
    assert widget.status_label.value == f"cancelled at {shown} %; no layer was changed"


def test_two_runs_keep_what_the_user_chose_and_leave_their_layers(pair, wait_for_worker, errors):
    viewer, widget = pair
    fixed, moving = viewer.layers["fixed"], viewer.layers["moving"]
    widget.overlay_check.value = False
    for _ in range(2):
        widget.run()
        wait_for_worker(widget)
    assert errors == []
    assert _outputs(viewer) == ["moving grid", "moving warped"]  # grid below the overlay
    assert len(viewer.layers) == 4
    assert fixed.colormap.name == "gray" and moving.visible  # the user's layers as they were
    widget.keep_combo.value = "warped only"
    widget.run()
    wait_for_worker(widget)
    assert _outputs(viewer) == ["moving warped"]
    widget.keep_combo.value = "warped + QA maps"
    widget.overlay_check.value = True
    widget.run()
    wait_for_worker(widget)
    assert len(_outputs(viewer)) == 8  # + checkerboard, difference, jacobian, folds, |u|, saliency
    assert fixed.colormap.name == "green" and not moving.visible  # asked for, by the tick
    assert all(not viewer.layers[n].visible for n in ("moving jacobian", "moving |u|"))
    assert widget.clear_results() == 8
    assert _outputs(viewer) == [] and [ly.name for ly in viewer.layers] == ["fixed", "moving"]
    assert fixed.colormap.name == "gray" and moving.visible  # restored


def test_result_layers_show_what_matters(known):
    viewer, widget, _ = known((1.0, 0.0), "warped + QA maps")
    magnitude = viewer.layers["moving |u|"]
    low, high = magnitude.contrast_limits
    assert low <= 2.0 <= high < 4.0  # 1 voxel of 2 mm
    # a second run with a larger field: the limits follow the data (no flat yellow map)
    known((5.0, 0.0), "warped + QA maps")
    assert viewer.layers["moving |u|"] is magnitude
    low, high = magnitude.contrast_limits
    assert 4.0 < low <= 10.0 <= high < 12.0
    # the difference spans its 99th percentile, not +-1
    difference = viewer.layers["moving difference"]
    low, high = difference.contrast_limits
    assert low == -high and high == pytest.approx(np.percentile(np.abs(difference.data), 99))
    assert np.mean(np.abs(difference.data) <= high) >= 0.98 and high < 1.0
    # the Jacobian is transparent where the field neither shrinks nor grows
    colormap = viewer.layers["moving jacobian"].colormap
    assert colormap.map(np.array([0.5]))[0, 3] < 0.05 and colormap.map(np.array([0.0]))[0, 3] == 1
    names = [ly.name for ly in viewer.layers]
    assert names.index("moving grid") < names.index("moving warped")
    assert viewer.layers["moving grid"].opacity <= 0.3


def test_two_docks_fit_a_1280x800_screen(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    _, register = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    _, train = viewer.window.add_plugin_dock_widget("napari-deepreg", "Train")
    _, inspect = viewer.window.add_plugin_dock_widget("napari-deepreg", "Inspect deformation")
    for widget in (register, train, inspect):
        assert widget.minimumSizeHint().height() <= 250, type(widget).__name__
        assert widget.scroll_area.widget().sizeHint().height() > widget.minimumSizeHint().height()
    needed = register.minimumSizeHint().height() + train.minimumSizeHint().height()
    assert needed < 800 - 150  # menus, title bars and the status bar included
    # the read-out can always be scrolled into view
    register.scroll_area.ensureWidgetVisible(register.metrics_label)


def test_register_result_is_offered_in_inspect(known):
    from napari_deepreg._inspect_widget import OfferedField

    viewer, widget, _ = known((0.0, 0.0))
    _, inspect = viewer.window.add_plugin_dock_widget("napari-deepreg", "Inspect deformation")
    known((1.0, -2.0))  # a docked Inspect hears of every new result
    offered = [value for value in inspect.field_combo.choices if isinstance(value, OfferedField)]
    assert len(offered) == 1 and inspect.field_combo.value is offered[0]
    combo = inspect.field_combo.native
    assert "moving (registration)" in [combo.itemText(i) for i in range(combo.count())]
    assert widget.inspect_button.enabled
    widget.inspect_button.native.click()
    assert inspect.stats is not None and inspect.stats.folding_fraction == 0.0
    assert "folding 0.000 %" in inspect.summary_label.text()
    assert "moving jacobian" in viewer.layers and viewer.dims.ndim == 2


def test_displacement_nifti_opens_through_file_open(known, tmp_path):
    from napari.settings import get_settings

    from napari_deepreg._reader import activate

    viewer, widget, _ = known((1.0, -2.0))
    path = widget.export_transform(tmp_path / "moving_warp.nii.gz")[0]
    activate()  # what npe2 calls on the plugin's first use
    assert get_settings().plugins.extension2reader["*.nii.gz"] == "napari-deepreg"
    # what File -> Open does: no plugin named; raises MultipleReaderError where the GUI would ask
    # "Choose reader"
    viewer.open(str(path), plugin=None)
    layer = viewer.layers["moving_warp field"]
    assert viewer.dims.ndim == 2 and layer.ndim == 2  # no stray slider for the vectors
    np.testing.assert_allclose(layer.scale, SPACING)
    _, inspect = viewer.window.add_plugin_dock_widget("napari-deepreg", "Inspect deformation")
    inspect.field_combo.value = layer
    stats = inspect.analyse()
    np.testing.assert_allclose(stats.jacobian, 1.0, atol=1e-4)
    assert "|u| mean 3.61 mm" in inspect.summary_label.text()  # hypot(1 * 2.0, 2 * 1.5) mm


def test_reader_preference_keeps_the_users_choice():
    from napari.settings import get_settings

    from napari_deepreg._reader import prefer_this_reader

    settings = get_settings()
    settings.plugins.extension2reader = {"*.tif": "some-other-plugin"}
    added = prefer_this_reader(settings)
    assert "*.tif" not in added and "*.nii.gz" in added
    assert settings.plugins.extension2reader["*.tif"] == "some-other-plugin"
    assert prefer_this_reader(settings) == []


def test_model_list_follows_the_images_dimensionality(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((8, 9, 10)).astype(np.float32), name="f3")
    viewer.add_image(np.random.default_rng(1).random((8, 9, 10)).astype(np.float32), name="m3")
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    choices = list(widget.model_combo.choices)
    assert "global-local" not in choices and "global-local-2d" not in choices
    assert "deformable" in choices and "deformable-3d" in choices
    assert "deformable-2d" not in choices
    viewer.add_image(np.random.default_rng(2).random((16, 16)).astype(np.float32), name="f2")
    widget.fixed_combo.value = viewer.layers["f2"]
    assert "global-local" in widget.model_combo.choices
    # "auto" (the default) names the network it runs for the preset, as register() picks it
    assert widget.model_combo.value == "auto"
    widget.preset_combo.value = "fast"
    assert "runs global-local-2d" in widget.card_text.toPlainText()
    widget.preset_combo.value = "auto"
    assert "runs deformable-2d" in widget.card_text.toPlainText()


def test_sample_pair_is_the_sample_data_pair_and_labels_are_picked(make_napari_viewer):
    import time

    from deepreg_core.api import read_image
    from napari_deepreg._sample_data import SAMPLE_DIR

    viewer = make_napari_viewer()
    start = time.monotonic()
    viewer.open_sample("napari-deepreg", "brain_3d")
    assert time.monotonic() - start < 3.0
    on_disk = read_image(SAMPLE_DIR / "brain3d_moving.nii.gz")
    np.testing.assert_array_equal(viewer.layers["moving"].data, on_disk.data)
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    assert widget.fixed_labels_combo.value is viewer.layers["fixed labels"]
    assert widget.moving_labels_combo.value is viewer.layers["moving labels"]


def test_train_synthetic_validation_starts_below_dice_085(make_napari_viewer, tmp_path,
                                                         monkeypatch):
    from deepreg_core.metrics import mean_dice
    from deepreg_core.synth import synthetic_pair

    monkeypatch.setenv("DEEPREG_HOME", str(tmp_path))
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Train")
    config, _, _ = widget.build_config()
    data = config.data
    pairs = [synthetic_pair(tuple(data.shape), seed, velocity_std=data.velocity_std,
                            n_labels=data.n_labels) for seed in range(3)]
    dice = np.mean([float(mean_dice(p.moving_labels, p.fixed_labels)) for p in pairs])
    assert dice < 0.85, dice
