"""Chunked training as the campaign runs it: a process killed or timed out mid-run resumes from
its last checkpoint and ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepreg_core.events import Finished, drain
from deepreg_core.training.config import TrainConfig, save_config
from deepreg_core.training.data import make_dataset
from deepreg_core.training.loop import latest_checkpoint, train


def _recipe(tmp_path: Path, name: str, steps: int = 300) -> Path:
    cfg = TrainConfig.model_validate({
        "model": {"kind": "deformable", "ndim": 2, "features": [4, 8]},
        "data": {"source": "synthetic", "shape": [32, 32], "validation_count": 1, "n_labels": 4},
        "loss": {"similarity": "lncc", "dice_weight": 1.0, "supervised_weight": 0.1},
        "optim": {"steps": steps, "lr": 1e-2},
        "device": "cpu", "seed": 7, "validate_every": 100, "checkpoint_every": 3,
        "output_dir": str(tmp_path / name),
    })
    return save_config(cfg, tmp_path / f"{name}.yaml")


def _cli(recipe: Path, out: Path, resume: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "deepreg_core.cli", "train", str(recipe), "--output-dir", str(out)]
    if resume:
        args += ["--resume", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)


def _wait_for_checkpoint(out: Path, process: subprocess.Popen, step: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        done = sorted((out / "checkpoints").glob("step_*/checkpoint.json"))
        if done and int(done[-1].parent.name[5:]) >= step:
            return
        time.sleep(0.05)
    pytest.fail(f"no checkpoint at step >= {step} appeared in {out}")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_run_stopped_mid_chunk_resumes_to_the_same_weights(tmp_path, how):
    recipe = _recipe(tmp_path, "chunked")
    straight = drain(train(_recipe(tmp_path, "straight")))
    assert isinstance(straight, Finished)

    out = tmp_path / "chunked"
    first = _cli(recipe, out, resume=False)
    _wait_for_checkpoint(out, first, 6)
    first.send_signal(how)  # SIGKILL: as a machine dying; SIGTERM: as `timeout` ending a chunk
    first.wait(timeout=120)
    stopped_at = int(latest_checkpoint(out).name[5:])
    assert 6 <= stopped_at < 300
    if how == signal.SIGTERM:  # a clean stop writes a checkpoint at the step it stopped on
        assert first.returncode == 0 and '"Stopped"' in first.stdout.read()
    second = _cli(recipe, out, resume=True)
    assert second.wait(timeout=300) == 0
    final = latest_checkpoint(out)
    assert final.name == "step_00000300"
    from deepreg_core.training.checkpoint import load_weights

    a, b = load_weights(straight.result["checkpoint"]), load_weights(final)
    assert set(a) == set(b) and all((a[k] == b[k]).all() for k in a)


def test_mixed_source_draws_both_kinds_reproducibly():
    cfg = TrainConfig.model_validate({"data": {"source": "mixed", "shape": [32, 32],
                                               "mni_fraction": 0.5, "n_labels": 5}})
    pytest.importorskip("nilearn")
    data = make_dataset(cfg.data, seed=3)
    assert data.n_labels == 5
    pairs = [data.pair(step, 0) for step in range(12)]
    label_counts = {int(p.fixed_labels.max()) + 1 for p in pairs}
    assert 3 in label_counts and max(label_counts) > 3  # MNI (3 tissue labels) and synthetic
    again = make_dataset(cfg.data, seed=3).pair(5, 0)
    assert (again.fixed == pairs[5].fixed).all() and (again.moving == pairs[5].moving).all()
    only = TrainConfig.model_validate({"data": {"source": "mixed", "shape": [32, 32],
                                                "mni_fraction": 0.0}})
    synthetic = make_dataset(only.data, seed=3)
    assert all(int(synthetic.pair(s, 0).fixed_labels.max()) + 1 > 3 for s in range(4))
