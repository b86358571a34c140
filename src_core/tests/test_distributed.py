"""Data-parallel training: two CPU processes under torchrun (gloo) stay in lock-step."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepreg_core.events import drain
from deepreg_core.training import distributed
from deepreg_core.training.checkpoint import load_weights
from deepreg_core.training.config import TrainConfig, save_config
from deepreg_core.training.loop import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(output: Path, batch_size: int, lr: float = 1e-3) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": {"kind": "deformable", "ndim": 2, "features": [4, 8], "diffeomorphic": False},
        "data": {"shape": [16, 16], "validation_count": 1, "n_labels": 3},
        "loss": {"similarity": "mse", "regularization_weight": 0.1},
        "optim": {"steps": 3, "lr": lr, "batch_size": batch_size},
        "device": "cpu", "output_dir": str(output), "seed": 0,
        "validate_every": 0, "checkpoint_every": 0,
    })


def test_single_process_context(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_torchrun()
    context = distributed.setup("cpu")
    assert (context.rank, context.world_size) == (0, 1)
    assert context.is_main and not context.enabled
    model = torch.nn.Linear(2, 2)
    assert context.wrap(model) is model
    assert context.any(True) and not context.any(False)
    assert context.mean({"loss": 2.0}) == {"loss": 2.0}
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert not distributed.launched_by_torchrun()  # one process is not distributed
    with pytest.raises(ValueError, match="device"):
        distributed.setup("tpu")


def test_two_ranks_train_in_lock_step(tmp_path):
    """torchrun with 2 gloo ranks, batch 1 each == one process with batch 2 (mean of gradients)."""
    config_path = save_config(_config(tmp_path / "ddp", batch_size=1), tmp_path / "ddp.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", "-m", "deepreg_core.training.torchrun",
        str(config_path),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d+): weights sha256 ([0-9a-f]{64})", run.stdout))
    assert set(digests) == {"0", "1"}, run.stdout
    assert digests["0"] == digests["1"]  # DDP kept the replicas identical
    assert run.stdout.count("[train ") == 3  # only rank 0 reports metrics
    checkpoints = sorted((tmp_path / "ddp" / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["step_00000003"]

    # rank r draws pair indices r*B..r*B+B-1, so the pair of ranks sees what batch 2 sees
    single = drain(train(_config(tmp_path / "single", batch_size=2)))
    a, b = load_weights(checkpoints[0]), load_weights(single.result["checkpoint"])
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    untrained = drain(train(_config(tmp_path / "zero", batch_size=2, lr=1e-12)))
    c = load_weights(untrained.result["checkpoint"])
    assert any(not torch.allclose(a[k], c[k], atol=1e-5) for k in a)  # training moved them
