"""Training: config, data streams, checkpoints, the event loop, stop/resume, learning."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deepreg_core.events import (
    CheckpointSaved,
    Finished,
    Metrics,
    Progress,
    Started,
    Stopped,
    StopToken,
    drain,
)
from deepreg_core.image import Image
from deepreg_core.io import write_image
from deepreg_core.metrics import endpoint_error
from deepreg_core.models import build_model
from deepreg_core.synth import synthetic_pair
from deepreg_core.training.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_weights,
    restore_rng,
    save_checkpoint,
)
from deepreg_core.training.config import TrainConfig, load_config, save_config
from deepreg_core.training.data import (
    FolderPairs,
    PairDataset,
    SyntheticPairs,
    make_dataset,
    pair_seed,
)
from deepreg_core.training.loop import latest_checkpoint, train


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def tiny(tmp_path: Path, **update) -> TrainConfig:
    """A 2D 32x32 run of a few steps of a very small network."""
    base = {
        "model": {"kind": "deformable", "ndim": 2, "features": [4, 8], "diffeomorphic": False},
        "data": {"shape": [32, 32], "validation_count": 1, "n_labels": 4},
        "loss": {"similarity": "mse", "regularization_weight": 0.1},
        "optim": {"steps": 6, "lr": 1e-2},
        "device": "cpu", "output_dir": str(tmp_path / "run"), "seed": 0,
        "validate_every": 3, "checkpoint_every": 4,
    }
    return TrainConfig.model_validate(_merge(base, update))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_weights(path)


# ----------------------------------------------------------------------------- config


def test_config_yaml_round_trip(tmp_path):
    cfg = tiny(tmp_path, loss={"dice_weight": 0.5}, init_from=str(tmp_path / "w.safetensors"))
    path = save_config(cfg, tmp_path / "sub" / "recipe.yaml")
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["loss"]["dice_weight"] == 0.5
    assert [p.name for p in path.parent.iterdir()] == ["recipe.yaml"]  # no temp file left


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"learning_rate": 1.0}, "learning_rate"),
        ({"optim": {"lr": 0.0}}, "optim.lr"),
        ({"optim": {"steps": 0}}, "optim.steps"),
        ({"data": {"shape": [32, 32, 32]}}, "data.shape"),
        ({"data": {"shape": [4, 32]}}, "data.shape"),
        ({"loss": {"similarity": "ssd"}}, "loss.similarity"),
        ({"loss": {"lncc_window": 8}}, "lncc_window"),
        ({"loss": {"saliency_weighting": True}}, "saliency_weighting"),
        ({"loss": {"similarity_weight": 0.0}}, "nothing drives"),
        ({"data": {"source": "folder"}}, "data.folder"),
        ({"data": {"pairing": "atlas"}}, "data.pairing"),
        ({"data": {"source": "folder", "folder": "x"}, "loss": {"supervised_weight": 1.0}},
         "supervised_weight"),
        ({"device": "tpu"}, "device"),
        ({"model": {"kind": "spline"}}, "model.kind"),
    ],
)
def test_config_errors_name_the_field(tmp_path, update, match):
    with pytest.raises(ValueError, match=match):
        tiny(tmp_path, **update)


def test_load_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_config(bad)
    bad.write_text("optim:\n  lr: -1\n")
    with pytest.raises(ValueError, match=r"(?s)bad.yaml.*optim.lr"):
        load_config(bad)
    with pytest.raises(TypeError, match="TrainConfig"):
        save_config({"seed": 1}, tmp_path / "x.yaml")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- data


def test_synthetic_stream_depends_only_on_step_and_index(tmp_path):
    cfg = tiny(tmp_path, data={"validation_count": 3})
    data = SyntheticPairs(cfg.data, seed=0)
    again = SyntheticPairs(cfg.data, seed=0)
    assert torch.equal(data.pair(5, 1).moving, again.pair(5, 1).moving)
    assert not torch.equal(data.pair(5, 1).fixed, data.pair(5, 0).fixed)
    assert not torch.equal(data.pair(5, 1).fixed, data.pair(6, 1).fixed)
    assert not torch.equal(data.pair(5, 1).fixed, SyntheticPairs(cfg.data, seed=1).pair(5, 1).fixed)
    batch = data.batch(5, 2, offset=2)  # what rank 1 of 2 draws with batch size 2
    assert torch.equal(batch.fixed[1:], data.pair(5, 3).fixed)
    assert batch.displacement.shape == (2, 2, 32, 32) and batch.has_labels


def test_validation_pairs_are_fixed_and_disjoint_from_training(tmp_path):
    cfg = tiny(tmp_path, data={"validation_count": 3})
    data = make_dataset(cfg.data, seed=0)
    first, second = data.validation(), data.validation()
    assert len(first) == 3
    assert all(torch.equal(a.fixed, b.fixed) for a, b in zip(first, second))
    training = [data.pair(step, i).fixed for step in range(10) for i in range(2)]
    assert not any(torch.equal(v.fixed, t) for v in first for t in training)
    seeds = {pair_seed(0, s, k, i) for s in (0, 1) for k in range(20) for i in range(4)}
    assert len(seeds) == 160


def _write_folder(folder: Path, n: int, shape=(20, 24)) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        data = (rng.random(shape) * 100 + 10 * i).astype(np.float32)
        write_image(Image.from_array(data), folder / f"case{i}.tif")
        labels = np.zeros(shape, np.uint16)
        labels[: shape[0] // 2] = 5
        labels[shape[0] // 2 :, : shape[1] // 2] = 9
        write_image(Image.from_array(labels), folder / f"case{i}_labels.tif")


def test_folder_pairs_resize_normalise_and_relabel(tmp_path):
    _write_folder(tmp_path / "imgs", 4)
    cfg = tiny(tmp_path, data={"source": "folder", "folder": str(tmp_path / "imgs"),
                               "validation_fraction": 0.5, "validation_count": 5})
    data = make_dataset(cfg.data, seed=0)
    assert isinstance(data, FolderPairs)
    assert len(data.train_images) == 2 and data.validation_size == 2
    assert data.n_labels == 3 and data.label_values == [0, 5, 9]
    batch = data.batch(0, 3)
    assert batch.fixed.shape == (3, 1, 32, 32) and batch.fixed_labels.shape == (3, 1, 32, 32)
    # normalised at full size, then resized (as inference does): within [0, 1], spanning it
    assert 0.0 <= float(batch.fixed.min()) < 0.05 and 0.95 < float(batch.fixed.max()) <= 1.0
    assert set(torch.unique(batch.fixed_labels).tolist()) == {0, 1, 2}
    assert batch.displacement is None
    assert not torch.equal(batch.fixed[0], batch.moving[0])  # two different files


def test_folder_pairs_atlas_and_errors(tmp_path):
    _write_folder(tmp_path / "imgs", 3)
    atlas = tmp_path / "imgs" / "case0.tif"
    cfg = tiny(tmp_path, data={"source": "folder", "folder": str(tmp_path / "imgs"),
                               "pairing": "atlas", "atlas": str(atlas), "validation_fraction": 0.0})
    data = make_dataset(cfg.data, seed=0)
    assert len(data.train_images) == 2  # the atlas is not a training subject
    batch = data.batch(0, 4)
    assert all(torch.equal(batch.fixed[i], data.atlas.fixed[0]) for i in range(4))
    few = tiny(tmp_path, data={"source": "folder", "folder": str(tmp_path / "imgs"),
                               "validation_fraction": 0.7})
    with pytest.raises(ValueError, match="at least"):
        make_dataset(few.data, seed=0)
    three_d = tmp_path / "vol"
    three_d.mkdir()
    write_image(Image.from_array(np.zeros((4, 8, 8), np.float32)), three_d / "a.nii.gz")
    wrong = tiny(tmp_path, data={"source": "folder", "folder": str(three_d)})
    with pytest.raises(ValueError, match="expected a 2D image"):
        make_dataset(wrong.data, seed=0)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    cfg = tiny(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    fixed, moving = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    for _ in range(2):
        optimizer.zero_grad()
        model(fixed, moving).displacement.pow(2).mean().add(1).backward()
        optimizer.step()
    path = save_checkpoint(tmp_path / "ckpt", model, optimizer, 2, cfg, {"note": "x"},
                           history={"train": [{"step": 1, "loss": 1.0}]})
    assert sorted(p.name for p in path.iterdir()) == [
        "checkpoint.json", "config.yaml", "optimizer.safetensors", "weights.safetensors"]
    ckpt = load_checkpoint(path)
    assert ckpt.step == 2 and ckpt.config == cfg and ckpt.extra == {"note": "x"}
    assert ckpt.history["train"][0]["loss"] == 1.0
    with torch.no_grad():
        expected = model(fixed, moving).displacement
        assert torch.equal(ckpt.model(fixed, moving).displacement, expected)
    other = torch.optim.AdamW(build_model(cfg.model).parameters(), lr=1e-2)
    other.load_state_dict(ckpt.optimizer_state)
    for a, b in zip(optimizer.state.values(), other.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["step"], b["step"])
    assert load_config(path / "config.yaml") == cfg  # the folder is also a zoo model folder


def test_incomplete_or_foreign_checkpoints_are_refused(tmp_path):
    cfg = tiny(tmp_path)
    path = save_checkpoint(tmp_path / "ckpt", build_model(cfg.model), None, 0, cfg)
    (path / "checkpoint.json").unlink()
    with pytest.raises(ValueError, match="incomplete checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nowhere")
    save_checkpoint(path, build_model(cfg.model), None, 0, cfg)
    text = (path / "checkpoint.json").read_text()
    (path / "checkpoint.json").write_text(text.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(ValueError, match="format_version 99"):
        load_checkpoint(path)
    bigger = tiny(tmp_path, model={"features": [8, 8]})
    save_checkpoint(path, build_model(cfg.model), None, 0, bigger)  # weights of another model
    with pytest.raises(ValueError, match="do not fit"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(path, build_model(cfg.model), None, -1, cfg)


def test_rng_states_restore():
    state = capture_rng()
    first = (torch.rand(3), np.random.rand(3), __import__("random").random())
    restore_rng(state)
    second = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_load_weights_reads_plain_tensor_files(tmp_path):
    model = build_model(tiny(tmp_path).model)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pt")
    state = load_weights(tmp_path / "w.pt")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"\.safetensors, \.pt"):
        (tmp_path / "w.npy").write_bytes(b"0")
        load_weights(tmp_path / "w.npy")
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "none.safetensors")


class _Exploit:
    """Unpickling this would create a file: a stand-in for arbitrary code."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "pwned.txt"
    bad = tmp_path / "weights.pt"
    with bad.open("wb") as stream:
        pickle.dump({"weight": _Exploit(str(target))}, stream, protocol=2)
    with pytest.raises(ValueError, match="refused to load"):
        load_weights(bad)
    assert not target.exists()
    torch.save({"weight": _Exploit(str(target))}, tmp_path / "zip.pth")  # torch's zip format
    target.unlink(missing_ok=True)
    with pytest.raises(ValueError, match="refused to load"):
        load_weights(tmp_path / "zip.pth")
    assert not target.exists()


# ----------------------------------------------------------------------------- the loop


def test_events_come_in_order(tmp_path):
    events = list(train(tiny(tmp_path)))
    assert isinstance(events[0], Started) and events[0].total_steps == 6
    assert isinstance(events[-1], Finished)
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == [1, 2, 3, 4, 5, 6]
    val = [e for e in events if isinstance(e, Metrics) and e.phase == "val"]
    assert [e.step for e in val] == [3, 6]
    assert {"loss", "dice", "folding_fraction", "epe"} <= set(val[0].values)
    train_metrics = [e for e in events if isinstance(e, Metrics) and e.phase == "train"]
    assert {"loss", "similarity", "regularization"} <= set(train_metrics[0].values)
    saved = [e.step for e in events if isinstance(e, CheckpointSaved)]
    assert saved == [4, 6]
    result = events[-1].result
    assert result["checkpoint"] == tmp_path / "run" / "checkpoints" / "step_00000006"
    assert load_checkpoint(result["checkpoint"]).step == 6
    assert len(result["history"]["train"]) == 6 and len(result["history"]["val"]) == 2


def test_stop_token_saves_a_loadable_checkpoint(tmp_path):
    token = StopToken()
    events = []
    for event in train(tiny(tmp_path, optim={"steps": 20}), stop=token):
        events.append(event)
        if isinstance(event, Progress) and event.step == 3:
            token.stop()
    assert isinstance(events[-1], Stopped) and events[-1].step == 3
    assert not any(isinstance(e, Finished) for e in events)
    assert max(e.step for e in events if isinstance(e, Progress)) == 3
    ckpt = load_checkpoint(events[-1].checkpoint)
    assert ckpt.step == 3 and len(ckpt.history["train"]) == 3


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    straight = drain(train(tiny(tmp_path / "a", optim={"steps": 8})))
    token = StopToken()
    cfg = tiny(tmp_path / "b", optim={"steps": 8})
    for event in train(cfg, stop=token):
        if isinstance(event, Progress) and event.step == 4:
            token.stop()
    assert isinstance(event, Stopped) and event.step == 4
    resumed = drain(train(cfg, resume=tmp_path / "b" / "run"))
    assert isinstance(resumed, Finished) and resumed.result["step"] == 8
    a, b = _weights(straight.result["checkpoint"]), _weights(resumed.result["checkpoint"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    def without_time(history):  # wall-clock seconds per step differ between any two runs
        return {k: [{n: v for n, v in row.items() if n != "seconds"} for row in rows]
                for k, rows in history.items()}

    assert without_time(straight.result["history"]) == without_time(resumed.result["history"])
    assert all(row["seconds"] > 0 for row in resumed.result["history"]["train"])
    assert straight.result["weights_sha256"] == resumed.result["weights_sha256"]


def test_lr_milestones_set_the_rate_and_a_run_resumed_across_one_matches_the_straight_run(tmp_path):
    optim = {"steps": 8, "lr_milestones": [[3, 5e-3], [6, 1e-3]]}
    straight = drain(train(tiny(tmp_path / "a", optim=optim)))
    token = StopToken()
    cfg = tiny(tmp_path / "b", optim=optim)
    for event in train(cfg, stop=token):
        if isinstance(event, Progress) and event.step == 2:  # stopped before the first milestone
            token.stop()
    resumed = drain(train(cfg, resume=tmp_path / "b" / "run"))
    a, b = _weights(straight.result["checkpoint"]), _weights(resumed.result["checkpoint"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [cfg.optim.lr_at(s) for s in range(8)] == [1e-2] * 3 + [5e-3] * 3 + [1e-3] * 2
    plain = drain(train(tiny(tmp_path / "c", optim={"steps": 8})))  # the schedule did something
    c = _weights(plain.result["checkpoint"])
    assert any(not torch.equal(a[k], c[k]) for k in a)
    for bad in ([[3, 1e-3], [3, 1e-4]], [[0, 1e-3]], [[5, 0.0]]):
        with pytest.raises(ValueError, match="lr_milestones"):
            tiny(tmp_path, optim={"lr_milestones": bad})


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="resume"):
        latest_checkpoint(tmp_path)
    drain(train(tiny(tmp_path, optim={"steps": 2})))
    other = tiny(tmp_path, model={"features": [8, 8]})
    with pytest.raises(ValueError, match="resume"):
        drain(train(other, resume=tmp_path / "run"))
    with pytest.raises(TypeError, match="config"):
        next(train(42))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dataset"):
        next(train(tiny(tmp_path), dataset=[1, 2]))  # type: ignore[arg-type]


def test_init_from_starts_from_given_weights(tmp_path):
    first = drain(train(tiny(tmp_path / "a", optim={"steps": 3})))
    cfg = tiny(tmp_path / "b", optim={"steps": 1, "lr": 1e-12},
               init_from=str(first.result["checkpoint"]))
    tuned = drain(train(cfg))
    a, b = _weights(first.result["checkpoint"]), _weights(tuned.result["checkpoint"])
    assert all(torch.allclose(a[k], b[k], atol=1e-9) for k in a)


def test_init_into_starts_a_global_local_networks_global_stage_from_a_deformable_model(tmp_path):
    """init_into fills one part of the network with another model's weights, exactly, and
    leaves the other parts as a fresh run with the same seed initialises them."""
    first = drain(train(tiny(tmp_path / "a", optim={"steps": 2})))
    donor = _weights(first.result["checkpoint"])
    gl = {"model": {"kind": "global_local", "ndim": 2, "features": [4, 8],
                    "local_features": [4, 8], "diffeomorphic": False},
          "optim": {"steps": 1, "lr": 1e-12}}
    fresh = drain(train(tiny(tmp_path / "b", **gl)))
    cfg = tiny(tmp_path / "c", **gl, init_from=str(first.result["checkpoint"]),
               init_into="global_net")
    tuned = _weights(drain(train(cfg)).result["checkpoint"])
    plain = _weights(fresh.result["checkpoint"])
    assert set(donor) == {k.removeprefix("global_net.") for k in tuned if k.startswith("global_net.")}
    for key, value in donor.items():
        torch.testing.assert_close(tuned["global_net." + key], value, atol=1e-9, rtol=0)
    local = [k for k in tuned if not k.startswith("global_net.")]
    assert local and all(torch.allclose(tuned[k], plain[k], atol=1e-9) for k in local)
    with pytest.raises(ValueError, match="no part 'nope'.*global_net"):
        next(train(tiny(tmp_path / "d", **gl, init_from=str(first.result["checkpoint"]),
                        init_into="nope")))
    with pytest.raises(ValueError, match="do not fit"):  # a deformable's weights into the local part
        next(train(tiny(tmp_path / "e", **gl, init_from=str(first.result["checkpoint"]),
                        init_into="local_head")))


class _OnePair(PairDataset):
    """The same synthetic pair at every step (and for validation)."""

    def __init__(self, pair) -> None:
        self._pair = pair
        self.n_labels = 8
        self.validation_size = 1

    def pair(self, step: int, index: int):
        return self._pair

    def validation_pair(self, index: int):
        return self._pair


def test_training_on_one_pair_recovers_the_known_field(tmp_path):
    pair = synthetic_pair((32, 32), 3, same_contrast=True, max_bias=0, max_noise=0,
                          velocity_std=3.0, smoothness=10.0)
    initial = endpoint_error(torch.zeros_like(pair.displacement), pair.displacement)
    assert initial > 1.0
    cfg = tiny(tmp_path, model={"features": [8, 16, 16]},
               loss={"supervised_weight": 1.0, "regularization_weight": 0.1},
               optim={"steps": 80}, validate_every=80, checkpoint_every=0)
    events = list(train(cfg, dataset=_OnePair(pair)))
    val = [e for e in events if isinstance(e, Metrics) and e.phase == "val"][-1]
    assert val.values["epe"] < 0.5 * initial
    trained = load_checkpoint(events[-1].result["checkpoint"]).model
    with torch.no_grad():
        out = trained(pair.fixed, pair.moving)
    epe = endpoint_error(out.displacement, pair.displacement)
    assert epe == pytest.approx(val.values["epe"], rel=1e-4)
    before = float(((pair.moving - pair.fixed) ** 2).mean())
    assert float(((out.warped - pair.fixed) ** 2).mean()) < before


def test_dice_and_saliency_terms_train(tmp_path):
    model = {"kind": "global_local", "features": [4, 8], "local_features": [4, 8]}
    cfg = tiny(tmp_path, model=model,
               loss={"dice_weight": 1.0, "saliency_weighting": True, "similarity": "lncc",
                     "lncc_window": 5}, optim={"steps": 2}, validate_every=2, checkpoint_every=0)
    events = list(train(cfg))
    values = [e for e in events if isinstance(e, Metrics) and e.phase == "train"][0].values
    assert {"dice", "similarity", "regularization"} <= set(values)
    assert all(np.isfinite(v) for v in values.values())
    assert isinstance(events[-1], Finished)
    assert os.path.isdir(events[-1].result["checkpoint"])


def test_a_loss_with_nothing_to_fit_is_refused(tmp_path):
    _write_folder(tmp_path / "imgs", 3)
    for name in (tmp_path / "imgs").glob("*_labels.tif"):
        name.unlink()  # no labels, so a Dice-only loss has nothing to fit
    cfg = tiny(tmp_path, data={"source": "folder", "folder": str(tmp_path / "imgs"),
                               "validation_fraction": 0.0},
               loss={"similarity_weight": 0.0, "dice_weight": 1.0})
    with pytest.raises(ValueError, match="no term applies"):
        drain(train(cfg))


class _OneBadBatch(SyntheticPairs):
    """Synthetic pairs, except that step 2's fixed image holds 1e30 (its squared error is inf)."""

    def batch(self, step, batch_size, offset=0):
        batch = super().batch(step, batch_size, offset)
        if step == 2:
            batch.fixed[0, 0, 3, 3] = 1e30
        return batch


def test_a_non_finite_loss_skips_its_step_and_clipping_bounds_the_gradient(tmp_path):
    cfg = tiny(tmp_path, optim={"grad_clip": 1e-3}, validate_every=0)
    events = list(train(cfg, dataset=_OneBadBatch(cfg.data, cfg.seed)))
    result = events[-1].result
    assert result["skipped_steps"] == 1
    weights = _weights(result["checkpoint"])
    assert all(torch.isfinite(w).all() for w in weights.values())
    norms = [row["grad_norm"] for row in result["history"]["train"] if "grad_norm" in row]
    assert len(norms) == cfg.optim.steps - 1 and min(norms) > 1e-3  # reported before clipping
