"""Zoo-style model folders for tests (a module of its own: the name ``conftest`` is taken by
two test folders, so ``from conftest import ...`` picks whichever was imported first)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from deepreg_core.models import build_model
from deepreg_core.training.config import TrainConfig, save_config


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
