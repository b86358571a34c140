"""Shared fixtures for the core tests: small model folders built from real configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deepreg_core.models import build_model
from deepreg_core.training.config import TrainConfig, save_config


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: runs a subprocess for seconds (kill/interrupt cases); still part of "
        "`make test`, deselect with -m 'not slow' for a quick loop"
    )


def make_model_folder(root: Path, name: str, **model) -> Path:
    """A zoo-style model folder (config.yaml + weights.safetensors + card.md) with init weights."""
    torch.manual_seed(0)
    ndim = model.get("ndim", 2)
    cfg = TrainConfig(model={"features": [8, 16, 16], **model},
                      data={"shape": [32] * ndim}, output_dir=str(root / "runs" / name))
    folder = root / name
    folder.mkdir(parents=True)
    save_config(cfg, folder / "config.yaml")
    net = build_model(cfg.model)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(folder / "weights.safetensors"))
    (folder / "card.md").write_text(f"# {name}\nA test model.\n")
    return folder


@pytest.fixture
def model_folder(tmp_path):
    return make_model_folder(tmp_path / "models", "tiny-deformable-2d", kind="deformable", ndim=2)
