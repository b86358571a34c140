"""The Train widget through the manifest: train, plot, publish, stop/resume, layers, errors."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPREG_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture
def train_widget(home, make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-deepreg", "Train")
    _tiny(widget, steps=6)
    return viewer, widget


def _tiny(widget, steps: int, name: str = "tiny") -> None:
    widget.ndim_combo.value = "2D"
    widget.shape_spin.value = 32
    widget.features_edit.value = "4, 8"
    widget.steps_spin.value = steps
    widget.device_combo.value = "cpu"
    widget.name_edit.value = name


def test_training_runs_publishes_and_reaches_register(train_widget, wait_for_worker, errors):
    from deepreg_core import zoo
    from deepreg_core.training.config import load_config

    viewer, widget = train_widget
    _, register = viewer.window.add_plugin_dock_widget("napari-deepreg", "Register")
    output = zoo.user_model_dir() / "tiny"
    assert str(widget.output_edit.value) == str(output)  # default: the user model folder
    widget.start_button.native.click()
    assert not widget.start_button.enabled and widget.stop_button.enabled
    wait_for_worker(widget, timeout=30_000)
    assert errors == []
    steps = [s for s, _ in widget.loss_plot.series["train"]]
    assert steps == list(range(1, 7))
    assert len(widget.loss_plot.series["val"]) >= 1
    assert widget.progress.value == widget.progress.max == 6
    assert {"config.yaml", "weights.safetensors", "card.md"} <= {p.name for p in output.iterdir()}
    model = zoo.load_model("tiny")
    assert model.config.model.features == [4, 8] and model.config.optim.steps == 6
    assert "tiny" in zoo.list_models()
    assert "finished at step 6" in (output / "card.md").read_text()
    # offered in Register, never switched to behind the user's back; its card is the saved one
    picked = register.model_combo.value
    assert picked != "tiny" and "tiny" in register.model_combo.choices
    register.model_combo.value = "tiny"
    card = register.card_text.toPlainText()
    assert "finished at step 6" in card and "not saved" not in card
    # the saved config is a complete recipe (what `deepreg-core train <output>/config.yaml` reads)
    assert load_config(output / "config.yaml").data.shape == [32, 32]
    # the same name again is refused: a user's model is never overwritten
    widget.start()
    assert "already exists" in errors[-1] and widget.worker is None


def test_stop_leaves_checkpoint_and_resume_finishes(train_widget, wait_for_worker, qtbot, errors):
    from deepreg_core import zoo
    from deepreg_core.training.checkpoint import load_checkpoint
    from deepreg_core.training.loop import latest_checkpoint

    _, widget = train_widget
    widget.steps_spin.value = 100_000
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=30_000)
    widget.stop_button.native.click()
    wait_for_worker(widget, timeout=30_000)
    assert errors == []
    output = zoo.user_model_dir() / "tiny"
    checkpoint = load_checkpoint(latest_checkpoint(output))
    stopped = checkpoint.step
    assert 2 <= stopped < 100_000
    assert "stopped" in widget.status_label.value
    assert zoo.load_model(output) is not None  # published at the stop
    widget.steps_spin.value = stopped + 3
    widget.resume_button.native.click()
    wait_for_worker(widget, timeout=30_000)
    assert errors == []
    assert load_checkpoint(latest_checkpoint(output)).step == stopped + 3
    assert widget.loss_plot.series["train"][-1][0] == stopped + 3
    card = (output / "card.md").read_text()
    assert f"finished at step {stopped + 3}" in card
    assert "fine-tuned from: none" in card and "resumed from:" in card  # not "resumed"


def test_training_from_two_layers(train_widget, blob_pair, wait_for_worker, errors):
    from deepreg_core import zoo
    from deepreg_core.io import read_image

    viewer, widget = train_widget
    fixed, moving = blob_pair()
    viewer.add_image(fixed, name="fixed", scale=(2.0, 1.5))
    viewer.add_image(moving, name="moving", scale=(2.0, 1.5))
    widget.source_combo.value = "open image layers"
    assert widget.fixed_combo.value == viewer.layers["fixed"]
    widget.moving_select.value = [viewer.layers["moving"]]
    widget.start()
    wait_for_worker(widget, timeout=30_000)
    assert errors == []
    output = zoo.user_model_dir() / "tiny"
    written = read_image(output / "data" / "moving_00.nii.gz")
    np.testing.assert_allclose(written.data, moving, atol=1e-5)  # same grid: copied as is
    np.testing.assert_allclose(written.spacing, (2.0, 1.5))
    assert len(widget.loss_plot.series["train"]) == 6
    assert zoo.load_model("tiny").config.data.source == "folder"


def test_bad_settings_are_notified(train_widget, home, errors):
    viewer, widget = train_widget
    widget.source_combo.value = "open image layers"
    widget.start()
    assert "no layer chosen" in errors[-1]
    viewer.add_image(np.zeros((32, 32), np.float32), name="flat")
    viewer.add_image(np.zeros((8, 32, 32), np.float32), name="volume")
    widget.fixed_combo.value = viewer.layers["flat"]
    widget.moving_select.value = []
    widget.start()
    assert "moving: no layer chosen" in errors[-1]
    widget.moving_select.value = [viewer.layers["volume"]]
    widget.start()
    assert "all 2D or all 3D" in errors[-1]
    # a 2D zoo model cannot be fine-tuned on 3D data
    _user_model("base-2d")
    widget.init_combo.reset_choices()
    widget.source_combo.value = "synthetic pairs"
    widget.ndim_combo.value = "3D"
    widget.init_combo.value = "base-2d"
    widget.start()
    assert "2D model cannot train on 3D data" in errors[-1]
    widget.init_combo.value = "none"
    widget.ndim_combo.value = "2D"
    blocker = home / "a-file"
    blocker.write_text("not a folder")
    widget.output_edit.value = str(blocker / "out")
    widget.start()
    assert "not writable" in errors[-1]
    widget.source_combo.value = "folder"
    widget.folder_edit.value = str(home)
    widget.start()
    assert "at least 2" in errors[-1]
    widget.resume()
    assert "nothing to resume" in errors[-1]
    assert widget.worker is None and all("Traceback" not in m for m in errors)


def _user_model(name: str) -> None:
    """A tiny untrained 2D model folder in the user model folder."""
    from safetensors.torch import save_file

    from deepreg_core import zoo
    from deepreg_core.models import build_model
    from deepreg_core.training.config import TrainConfig, save_config

    config = TrainConfig(model={"ndim": 2, "features": [4, 8]}, data={"shape": [32, 32]})
    folder = zoo.user_model_dir() / name
    save_config(config, folder / "config.yaml")
    save_file(build_model(config.model).state_dict(), str(folder / "weights.safetensors"))


def test_fine_tune_from_a_zoo_model(train_widget, wait_for_worker, errors):
    from deepreg_core import zoo

    _user_model("base")
    _, widget = train_widget
    widget.init_combo.reset_choices()
    widget.init_combo.value = "base"
    widget.features_edit.value = "99"  # ignored: the architecture comes from the base model
    widget.name_edit.value = "tuned"
    config, _, _ = widget.build_config()
    assert config.init_from == zoo.user_model_dir() / "base" / "weights.safetensors"
    widget.start()
    wait_for_worker(widget, timeout=30_000)
    assert errors == []
    tuned = zoo.load_model("tuned").config
    assert tuned.model == zoo.get("base").config().model and tuned.init_from is not None


def test_eta_format():
    from napari_deepreg._train_job import format_eta

    assert format_eta(123.4) == "2:03 left"
    assert format_eta(3725) == "1:02:05 left"
    assert format_eta(float("inf")) == ""


def test_validation_line_shows_dice_and_folding():
    from napari_deepreg._train_widget import validation_text

    text = validation_text(40, {"loss": 0.5, "dice": 0.91, "dice_before": 0.7,
                                "folding_fraction": 0.0005})
    assert text == "validation @ 40: loss 0.5 · Dice 0.700 → 0.910 · folding 0.050 %"
    assert "Dice" not in validation_text(3, {"loss": 1.0})
