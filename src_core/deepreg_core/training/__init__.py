"""Training: typed config, pair streams, checkpoints, the loop, and DDP under ``torchrun``.

| module | holds |
|---|---|
| ``config`` | :class:`TrainConfig` (model, loss, data, optim, seed, device, output) and YAML I/O |
| ``data`` | :class:`SyntheticPairs`, :class:`FolderPairs`, :class:`MNIPairs` (pair streams) |
| ``checkpoint`` | :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`load_weights` |
| ``loop`` | :func:`train`: a generator of :mod:`~deepreg_core.events` with stop and resume |
| ``distributed`` | process group set-up, DDP wrapping, the ``python -m`` entry point |

Names are imported lazily so that reading a config does not load the networks.

Example
-------
>>> from deepreg_core.training import TrainConfig, train
>>> from deepreg_core.events import drain
>>> cfg = TrainConfig(model={"features": [8, 8]}, data={"shape": [32, 32]},
...                   optim={"steps": 5}, device="cpu")  # doctest: +SKIP
>>> drain(train(cfg)).result["checkpoint"]              # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "LossConfig": "config", "DataConfig": "config",
    "OptimConfig": "config", "load_config": "config", "save_config": "config",
    "Batch": "data", "SyntheticPairs": "data", "FolderPairs": "data", "MNIPairs": "data",
    "make_dataset": "data",
    "Checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint", "load_weights": "checkpoint",
    "train": "loop", "validate": "loop", "latest_checkpoint": "loop", "Objective": "loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"deepreg_core.training.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'deepreg_core.training' has no attribute {name!r}")
