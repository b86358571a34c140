"""Self-describing checkpoints: safetensors weights + a JSON description, never pickle.

A checkpoint is a folder::

    weights.safetensors    the model's state dict
    optimizer.safetensors  the optimiser's state tensors ("optimizer/<param>/<name>") and the
                           torch CPU random state ("rng/torch_cpu")
    config.yaml            the TrainConfig (so the folder is also a zoo model folder)
    checkpoint.json        {format_version, package_version, config, step, rng (numpy, python),
                           optimizer (param groups and scalar state), history, extra}

Every file is written to a temporary name and moved into place with ``os.replace``;
``checkpoint.json`` is removed first and written last, so a folder with a ``checkpoint.json`` is
always complete; temporary files left by a killed writer are removed by the next save into the
same folder (:func:`remove_stale_checkpoint_files` cleans a whole run). Loading reads tensors with
safetensors only and checks every shape against the config (:func:`check_weights_fit`, on the
``meta`` device, allocating nothing) *before* building the model; a corrupt, truncated or lying
file is a ``ValueError`` naming it. :func:`load_weights` refuses ``.pt`` files that would run code.

Example
-------
>>> path = save_checkpoint("run/ckpt", model, optimizer, step=10, config=cfg)  # doctest: +SKIP
>>> ckpt = load_checkpoint(path)                                              # doctest: +SKIP
>>> ckpt.step, type(ckpt.model).__name__                                      # doctest: +SKIP
(10, 'DeformableNet')
"""

from __future__ import annotations

import json
import os
import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import deepreg_core
from deepreg_core._files import atomic_target, atomic_write_text, remove_stale_temporaries
from deepreg_core.models.config import ModelConfig
from deepreg_core.training.config import TrainConfig, save_config

FORMAT_VERSION = 1
WEIGHTS, OPTIMIZER, CONFIG, DESCRIPTION = (
    "weights.safetensors", "optimizer.safetensors", "config.yaml", "checkpoint.json",
)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes
    ----------
    path : Path
        The checkpoint folder.
    config : TrainConfig
    step : int
        Optimiser steps done.
    model : nn.Module
        Rebuilt from ``config.model`` with the saved weights, on the CPU, in eval mode.
    optimizer_state : dict or None
        Ready for ``optimizer.load_state_dict`` (None when no optimiser was saved).
    rng : dict
        ``{"torch_cpu": ByteTensor, "numpy": ..., "python": ...}`` (see :func:`restore_rng`).
    history : dict
        Loss history, ``{"train": [...], "val": [...]}``.
    extra : dict
        Whatever the caller saved alongside.
    package_version : str
        ``deepreg_core.__version__`` of the writer.
    """

    path: Path
    config: TrainConfig
    step: int
    model: nn.Module
    optimizer_state: dict[str, Any] | None
    rng: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    package_version: str = ""


# ----------------------------------------------------------------------------- random states


def capture_rng() -> dict[str, Any]:
    """The torch CPU, NumPy and Python global random states (the torch one as a tensor)."""
    state = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch_cpu": torch.get_rng_state(),
        "numpy": [state[0], state[1].tolist(), int(state[2]), int(state[3]), float(state[4])],
        "python": [version, list(internal), gauss],
    }


def restore_rng(rng: Mapping[str, Any]) -> None:
    """Set the global random states saved by :func:`capture_rng` (missing parts are skipped)."""
    if "torch_cpu" in rng:
        torch.set_rng_state(rng["torch_cpu"])
    if "numpy" in rng:
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------- writing


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_target(path) as temporary:
        save_file(tensors, str(temporary))


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").clone().contiguous()


def _split_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimiser state dict → (tensors for safetensors, JSON-ready rest)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{param}/{name}"] = _plain(value)
            else:
                scalars.setdefault(str(param), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(
    directory: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer | None,
    step: int, config: TrainConfig, extra: Mapping[str, Any] | None = None, *,
    history: Mapping[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint folder atomically (see the module docstring).

    Parameters
    ----------
    directory : path
        The checkpoint folder (created; an older checkpoint there is replaced).
    model : nn.Module
        The network (a ``DistributedDataParallel`` wrapper is unwrapped).
    optimizer : torch.optim.Optimizer or None
    step : int
        Optimiser steps done.
    config : TrainConfig
    extra : mapping, optional
        JSON-serialisable data to keep alongside.
    history : mapping, optional
        Loss history (JSON-serialisable).

    Returns
    -------
    Path
        ``directory``.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}.")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected an integer >= 0, got {step!r}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory)
    (directory / DESCRIPTION).unlink(missing_ok=True)  # invalid until fully written again

    network = getattr(model, "module", model)
    _atomic_save_tensors({k: _plain(v) for k, v in network.state_dict().items()},
                         directory / WEIGHTS)
    rng = capture_rng()
    tensors: dict[str, torch.Tensor] = {"rng/torch_cpu": rng.pop("torch_cpu")}
    optimizer_json = None
    if optimizer is not None:
        optimizer_tensors, optimizer_json = _split_optimizer(optimizer)
        tensors.update(optimizer_tensors)
    _atomic_save_tensors(tensors, directory / OPTIMIZER)
    save_config(config, directory / CONFIG)
    description = {
        "format_version": FORMAT_VERSION,
        "package_version": deepreg_core.__version__,
        "config": config.model_dump(mode="json"),
        "step": step,
        "rng": rng,
        "optimizer": optimizer_json,
        "history": dict(history or {}),
        "extra": dict(extra or {}),
    }
    atomic_write_text(directory / DESCRIPTION, json.dumps(description))
    return directory


# ----------------------------------------------------------------------------- reading


def _join_optimizer(tensors: Mapping[str, torch.Tensor], saved: Mapping[str, Any],
                    directory: Path) -> dict:
    try:
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, param, name = key.split("/", 2)
                state.setdefault(int(param), {})[name] = value
        for param, values in saved.get("scalars", {}).items():
            state.setdefault(int(param), {}).update(values)
        return {"state": state, "param_groups": list(saved["param_groups"])}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ValueError(
            f"{directory}: the optimiser state ({OPTIMIZER} and {DESCRIPTION}) is malformed; "
            "use an earlier checkpoint."
        ) from None


_SAFETENSORS_ERRORS = (SafetensorError, OSError, ValueError, RuntimeError, MemoryError)


def _bad_tensor_file(path: Path, error: BaseException) -> ValueError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(
        f"{path}: not a readable safetensors file ({reason[:200]}). It may be truncated, "
        "corrupt or another format under this name; restore it or retrain."
    )


def read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, on the CPU (no code runs); ValueError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file.")
    try:
        return load_file(str(path), device="cpu")
    except _SAFETENSORS_ERRORS as error:
        raise _bad_tensor_file(path, error) from None


def tensor_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a safetensors file, read from its header only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except _SAFETENSORS_ERRORS as error:
        raise _bad_tensor_file(path, error) from None


def tensor_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file's header (empty when it has none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except _SAFETENSORS_ERRORS as error:
        raise _bad_tensor_file(path, error) from None


CPU_SHAPE_CHECK_BYTES = 256 << 20
"""Below this bound on a config's weights, :func:`expected_shapes` builds the network on the CPU
(milliseconds); above it on the ``meta`` device (no memory, but its first use imports torch's
meta kernels, about 3 s)."""


def weight_bytes_bound(config: ModelConfig) -> int:
    """An upper bound on the bytes of the weights ``config`` describes (float32).

    Every convolution of every part has at most ``w_max² · 3^ndim`` weights, where ``w_max`` is
    the widest layer (at least twice the input channels); there are at most ``(convs + 2)``
    of them per level, for every level of the encoder, decoder and the other parts.
    """
    widths = [*config.features, *config.resolved_decoder_features(), *config.affine_features,
              *config.local_features, 2 * config.in_channels + 2 * config.ndim]
    levels = len(config.features) + len(config.affine_features) + len(config.local_features)
    per_conv = max(widths) ** 2 * 3 ** config.ndim + max(widths)
    return 4 * per_conv * (config.convs_per_level + 2) * 2 * levels


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of the network ``config`` describes, without the real weights'
    memory for a large config (built on ``meta``; see :data:`CPU_SHAPE_CHECK_BYTES`)."""
    from deepreg_core.models import build_model

    if weight_bytes_bound(config) <= CPU_SHAPE_CHECK_BYTES:
        network = build_model(config)
    else:
        with torch.device("meta"):
            network = build_model(config)
    return {key: tuple(value.shape) for key, value in network.state_dict().items()}


def check_weights_fit(config: ModelConfig, shapes: Mapping[str, tuple[int, ...]],
                      source: object) -> None:
    """Raise a ValueError naming ``source`` unless ``shapes`` are exactly those of ``config``."""
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k} {tuple(shapes[k])} (expected {expected[k]})"
             for k in sorted(set(expected) & set(shapes)) if tuple(shapes[k]) != expected[k]]
    if missing or unexpected or wrong:
        details = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"wrong shapes {wrong[:2]}" if wrong else "",
        ) if part)
        raise ValueError(
            f"{source}: the weights do not fit the config ({details}). Check that the config "
            "matches the weights."
        )


def _check_optimizer_fits(state: Mapping[str, Any], model: nn.Module, directory: Path) -> None:
    """Every per-parameter optimiser tensor must have its parameter's shape (scalars aside)."""
    params = list(model.parameters())
    for index, values in state["state"].items():
        if not 0 <= index < len(params):
            raise ValueError(
                f"{directory}: the optimiser state names parameter {index}, but the model has "
                f"{len(params)}; {OPTIMIZER} does not belong to these weights."
            )
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != params[index].shape:
                raise ValueError(
                    f"{directory}: optimiser tensor {index}/{name} has shape "
                    f"{tuple(value.shape)}, its parameter {tuple(params[index].shape)}; "
                    f"{OPTIMIZER} does not belong to these weights."
                )


def load_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint:
    """Load a checkpoint folder written by :func:`save_checkpoint` (no pickle involved).

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    ValueError
        If it is incomplete (no ``checkpoint.json``: interrupted while saving), of a newer
        format, or its weights do not fit its config.
    """
    from deepreg_core.models import build_model

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint folder.")
    if not (directory / DESCRIPTION).is_file():
        raise ValueError(
            f"{directory}: incomplete checkpoint (no {DESCRIPTION}; it was probably interrupted "
            "while saving). Use an earlier checkpoint."
        )
    try:
        description = json.loads((directory / DESCRIPTION).read_text(encoding="utf-8"))
        version = description.get("format_version")
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise ValueError(f"{directory}: {DESCRIPTION} is not a JSON description.") from None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{directory}: checkpoint format_version {version!r} is not supported (this is "
            f"deepreg_core {deepreg_core.__version__}, format {FORMAT_VERSION}). "
            "Upgrade deepreg-core."
        )
    try:
        config = TrainConfig.model_validate(description["config"])
        step = int(description["step"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"{directory}: {DESCRIPTION} lacks a valid config or step; use an earlier checkpoint."
        ) from None
    check_weights_fit(config.model, tensor_shapes(directory / WEIGHTS), directory / WEIGHTS)
    weights = read_tensors(directory / WEIGHTS)
    model = build_model(config.model)
    load_state(model, weights, directory / WEIGHTS)
    model.eval()
    tensors = read_tensors(directory / OPTIMIZER)
    saved = description.get("optimizer")
    optimizer_state = None if saved is None else _join_optimizer(tensors, saved, directory)
    if optimizer_state is not None:
        _check_optimizer_fits(optimizer_state, model, directory)
    rng = dict(description.get("rng", {}))
    if "rng/torch_cpu" in tensors:
        rng["torch_cpu"] = tensors["rng/torch_cpu"]
    return Checkpoint(
        path=directory, config=config, step=step, model=model,
        optimizer_state=optimizer_state,
        rng=rng, history=description.get("history", {}), extra=description.get("extra", {}),
        package_version=str(description.get("package_version", "")),
    )


def remove_stale_checkpoint_files(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files that killed writers left in ``output_dir/checkpoints/*/``.

    Only files of writers that are no longer running go (see
    :func:`deepreg_core._files.remove_stale_temporaries`); returns what was removed.
    """
    root = Path(output_dir) / "checkpoints"
    removed: list[Path] = []
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            removed += remove_stale_temporaries(folder)
    return removed


def load_state(model: nn.Module, weights: Mapping[str, torch.Tensor], source: object) -> None:
    """``model.load_state_dict(weights)`` that raises a ValueError naming ``source`` on mismatch."""
    try:
        missing, unexpected = model.load_state_dict(dict(weights), strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(
            f"{source}: weights do not fit the model ({str(error).splitlines()[-1].strip()}). "
            "Check that the config matches the weights."
        ) from None
    if missing or unexpected:
        raise ValueError(
            f"{source}: weights do not fit the model (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}). Check that the config matches the weights."
        )


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict without executing code.

    Parameters
    ----------
    path : path
        A ``.safetensors`` file; a checkpoint or zoo folder (its ``weights.safetensors``); or a
        ``.pt``/``.pth``/``.bin`` file read with ``torch.load(weights_only=True)``, which refuses
        anything but tensors and plain containers (a ``{"state_dict": ...}`` or
        ``{"model": ...}`` wrapper is unwrapped).

    Returns
    -------
    dict of str to Tensor, on the CPU.

    Raises
    ------
    ValueError
        Unknown suffix, or a pickle that holds objects other than tensors (it would run code).

    Example
    -------
    >>> state = load_weights("run/checkpoints/step_00001000")  # doctest: +SKIP
    >>> model.load_state_dict(state)                           # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file.")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_tensors(path)
    if suffix not in (".pt", ".pth", ".bin"):
        raise ValueError(
            f"{path}: expected a .safetensors, .pt, .pth or .bin weights file, got {suffix!r}."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as error:
        raise ValueError(
            f"{path}: refused to load: the file holds objects other than tensors, and unpickling "
            f"them could run code ({type(error).__name__}). Convert trusted weights to "
            "safetensors."
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors.")
    return dict(state)
