"""The training loop: a generator of events that checks a stop token every step.

``train(config)`` yields :class:`~deepreg_core.events.Started`, then for every step
:class:`~deepreg_core.events.Progress` and the training :class:`~deepreg_core.events.Metrics`
(loss and its parts), validation metrics every ``validate_every`` steps (loss, and Dice, folding
fraction and endpoint error where the data allows), :class:`~deepreg_core.events.CheckpointSaved`
every ``checkpoint_every`` steps and at the end, and finally
:class:`~deepreg_core.events.Finished` — or, when the stop token is set, a checkpoint and
:class:`~deepreg_core.events.Stopped`. Resuming from a checkpoint continues the run exactly: same
weights, optimiser state, random states and stream of pairs.

Example
-------
>>> from deepreg_core.events import drain
>>> cfg = TrainConfig(model={"features": [8, 8]}, data={"shape": [32, 32]},
...                   optim={"steps": 5}, device="cpu", output_dir="run")  # doctest: +SKIP
>>> drain(train(cfg)).result["checkpoint"]                                   # doctest: +SKIP
PosixPath('run/checkpoints/step_00000005')
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepreg_core.events import (
    CheckpointSaved,
    Event,
    Finished,
    Metrics,
    Progress,
    Started,
    Stopped,
    StopToken,
)
from deepreg_core.losses import BendingEnergy, DiceLoss, Diffusion, get_similarity
from deepreg_core.metrics import endpoint_error, folding_fraction, mean_dice
from deepreg_core.models import RegistrationOutput, build_model
from deepreg_core.spatial import warp
from deepreg_core.training import distributed
from deepreg_core.training.checkpoint import (
    DESCRIPTION,
    load_checkpoint,
    load_state,
    load_weights,
    remove_stale_checkpoint_files,
    restore_rng,
    save_checkpoint,
)
from deepreg_core.training.config import LossConfig, TrainConfig, load_config
from deepreg_core.training.data import Batch, PairDataset, make_dataset


class Objective:
    """The weighted training loss of a :class:`LossConfig`.

    Calling it with a network output and its batch returns the weighted ``"loss"`` and each
    unweighted term that applies (``"similarity"``, ``"regularization"``, ``"dice"``,
    ``"supervised"``) as scalar tensors.
    """

    def __init__(self, config: LossConfig, kind: str, n_labels: int | None) -> None:
        self.config = config
        self.kind = kind
        self.n_labels = n_labels
        options = {"window": config.lncc_window} if config.similarity == "lncc" else {}
        self.similarity = get_similarity(config.similarity, **options)
        self.regularizer = Diffusion() if config.regularizer == "diffusion" else BendingEnergy()
        self.dice = DiceLoss()

    def one_hot(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``(B, 1, *spatial)`` integer labels → ``(B, n_labels, *spatial)`` float."""
        hot = F.one_hot(labels[:, 0].clamp(0, self.n_labels - 1), self.n_labels)
        return hot.movedim(-1, 1).to(dtype)

    def __call__(self, output: RegistrationOutput, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.config
        parts: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []
        if c.similarity_weight > 0:
            mask = None
            if c.saliency_weighting and output.saliency is not None:
                mask = output.saliency.detach().clamp_min(1e-3)
            parts["similarity"] = self.similarity(batch.fixed, output.warped, mask)
            weighted.append(c.similarity_weight * parts["similarity"])
        if c.regularization_weight > 0 and self.kind != "affine":
            parts["regularization"] = self.regularizer(output.displacement)
            weighted.append(c.regularization_weight * parts["regularization"])
        if c.dice_weight > 0 and batch.has_labels and self.n_labels:
            dtype = output.displacement.dtype
            moved = warp(self.one_hot(batch.moving_labels, dtype), output.displacement,
                         padding="border")
            parts["dice"] = self.dice(self.one_hot(batch.fixed_labels, dtype), moved)
            weighted.append(c.dice_weight * parts["dice"])
        if c.supervised_weight > 0 and batch.displacement is not None:
            error = (output.displacement - batch.displacement).pow(2).sum(dim=1)
            parts["supervised"] = error.mean()
            weighted.append(c.supervised_weight * parts["supervised"])
        if not set(parts) & {"similarity", "dice", "supervised"}:
            raise ValueError(
                "loss: no term applies to this batch (dice_weight needs label maps, "
                "supervised_weight a ground-truth field). Set similarity_weight > 0 or give the "
                "data labels."
            )
        parts["loss"] = torch.stack(weighted).sum()
        return parts


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python, and make cuDNN deterministic (cheap settings only)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, shapes, bytes), to compare runs and ranks."""
    digest = hashlib.sha256()
    for name, tensor in sorted(getattr(model, "module", model).state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_dir(output_dir: str | os.PathLike[str], step: int) -> Path:
    """Where the checkpoint of ``step`` goes: ``output_dir/checkpoints/step_XXXXXXXX``."""
    return Path(output_dir) / "checkpoints" / f"step_{step:08d}"


def latest_checkpoint(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it is a checkpoint, else the latest complete one under it.

    Raises
    ------
    FileNotFoundError
        If there is none.
    """
    path = Path(path)
    if (path / DESCRIPTION).is_file():
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    found = sorted(p for p in root.glob("step_*") if (p / DESCRIPTION).is_file())
    if not found:
        raise FileNotFoundError(
            f"resume: expected a checkpoint folder (holding {DESCRIPTION}) or an output folder "
            f"with checkpoints/step_*, got {path}."
        )
    return found[-1]


def _as_config(config: TrainConfig | Mapping[str, Any] | str | os.PathLike[str]) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return TrainConfig.model_validate(config.model_dump())  # re-validates model_copy edits
    if isinstance(config, Mapping):
        return TrainConfig.model_validate(dict(config))
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise TypeError(
        f"config: expected a TrainConfig, a mapping of its fields or a YAML path, got "
        f"{type(config).__name__}."
    )


@torch.no_grad()
def validate(
    model: nn.Module, dataset: PairDataset, objective: Objective, device: torch.device
) -> dict[str, float]:
    """Mean loss terms and, where available, Dice, folding fraction and endpoint error."""
    was_training = model.training
    model.eval()
    totals: dict[str, list[float]] = {}
    for batch in dataset.validation():
        batch = batch.to(device)
        output = model(batch.fixed, batch.moving)
        values = {k: float(v) for k, v in objective(output, batch).items()}
        values["folding_fraction"] = folding_fraction(output.displacement)
        if batch.has_labels:
            moved = warp(batch.moving_labels, output.displacement, mode="nearest", padding="border")
            values["dice"] = mean_dice(moved, batch.fixed_labels)
            values["dice_before"] = mean_dice(batch.moving_labels, batch.fixed_labels)
        if batch.displacement is not None:
            values["epe"] = endpoint_error(output.displacement, batch.displacement)
        for key, value in values.items():
            totals.setdefault(key, []).append(value)
    model.train(was_training)
    return {k: float(np.nanmean(v)) for k, v in totals.items()}


def train(
    config: TrainConfig | Mapping[str, Any] | str | os.PathLike[str], *,
    stop: StopToken | None = None, resume: str | os.PathLike[str] | None = None,
    dataset: PairDataset | None = None,
) -> Iterator[Event]:
    """Train a registration network; a generator of events (see the module docstring).

    Parameters
    ----------
    config : TrainConfig, mapping or YAML path
    stop : StopToken, optional
        Checked before every step; when set, a checkpoint is saved and ``Stopped`` ends the run.
    resume : path, optional
        A checkpoint folder, or an output folder (its latest checkpoint), to continue from. Its
        model config must equal ``config.model``; ``config.optim.steps`` may be larger.
    dataset : PairDataset, optional
        Pairs to train on instead of those ``config.data`` describes (e.g. images the user
        has open); they must be on the ``config.data.shape`` grid.

    Yields
    ------
    Event
        ``Started``, per step ``Progress`` and ``Metrics(phase="train")``, periodic
        ``Metrics(phase="val")`` and ``CheckpointSaved``, then ``Finished(result)`` with
        ``result = {"checkpoint", "step", "history", "weights_sha256", "output_dir"}``, or
        ``Stopped(step, checkpoint)``. Under ``torchrun`` only rank 0 yields metrics and
        checkpoints.
    """
    cfg = _as_config(config)
    if dataset is not None and not isinstance(dataset, PairDataset):
        raise TypeError(
            f"dataset: expected a deepreg_core.training.data.PairDataset, got "
            f"{type(dataset).__name__}."
        )
    context = distributed.setup(cfg.device)
    try:
        yield from _run(cfg, context, stop, resume, dataset)
    finally:
        distributed.teardown(context)


def _init_target(model: torch.nn.Module, name: str | None) -> torch.nn.Module:
    """The sub-module ``init_into`` names (the whole model for None), or a ValueError listing
    the model's top-level parts."""
    if name is None:
        return model
    try:
        return model.get_submodule(name)
    except AttributeError:
        parts = ", ".join(n for n, _ in model.named_children())
        raise ValueError(f"init_into: the model has no part {name!r}; its parts are: {parts}.") \
            from None


def _run(
    cfg: TrainConfig, context: distributed.DistributedContext, stop: StopToken | None,
    resume: str | os.PathLike[str] | None, dataset: PairDataset | None,
) -> Iterator[Event]:
    device = context.device
    if context.is_main:
        remove_stale_checkpoint_files(cfg.output_dir)  # what a killed earlier run left
    seed_everything(cfg.seed)
    model = build_model(cfg.model)
    if cfg.init_from is not None:
        load_state(_init_target(model, cfg.init_into), load_weights(cfg.init_from),
                   f"init_from {cfg.init_from}" + (f" into {cfg.init_into}" if cfg.init_into
                                                   else ""))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr,
                                  weight_decay=cfg.optim.weight_decay)
    start, history = 0, {"train": [], "val": []}
    last_saved: tuple[int, Path] | None = None
    if resume is not None:
        checkpoint = load_checkpoint(latest_checkpoint(resume))
        if checkpoint.config.model != cfg.model:
            raise ValueError(
                f"resume: the checkpoint's model config {checkpoint.config.model.model_dump()} "
                f"differs from config.model {cfg.model.model_dump()}; resume with the same model."
            )
        model.load_state_dict(checkpoint.model.state_dict())
        if checkpoint.optimizer_state is not None:
            optimizer.load_state_dict(checkpoint.optimizer_state)
            for group in optimizer.param_groups:  # a resumed run follows the config's optimiser
                group["weight_decay"] = cfg.optim.weight_decay
        restore_rng(checkpoint.rng)
        start, history = checkpoint.step, checkpoint.history
        last_saved = (start, checkpoint.path)
    network = context.wrap(model)
    dataset = make_dataset(cfg.data, cfg.seed) if dataset is None else dataset
    objective = Objective(cfg.loss, cfg.model.kind, dataset.n_labels)
    total = cfg.optim.steps
    batch_size = cfg.optim.batch_size

    def save(step: int) -> Path:
        path = checkpoint_dir(cfg.output_dir, step)
        if context.is_main:
            save_checkpoint(path, model, optimizer, step, cfg, history=history,
                            extra={"world_size": context.world_size, "device": str(device),
                                   "threads": torch.get_num_threads()})
        context.barrier()
        return path

    skipped = 0
    yield Started(total_steps=total, config=cfg.model_dump(mode="json"))
    network.train()
    for step in range(start, total):
        if context.any(stop is not None and stop.stopped):
            path = save(step)
            yield Stopped(step=step, checkpoint=path)
            return
        began = time.perf_counter()
        for group in optimizer.param_groups:  # the schedule is a function of the step alone
            group["lr"] = cfg.optim.lr_at(step)
        batch = dataset.batch(step, batch_size, offset=context.rank * batch_size).to(device)
        parts = objective(network(batch.fixed, batch.moving), batch)
        optimizer.zero_grad(set_to_none=True)
        if context.any(not bool(torch.isfinite(parts["loss"]))):
            skipped += 1  # a non-finite loss would write NaN into every weight: skip the batch
        else:
            parts["loss"].backward()
            if cfg.optim.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                parts["grad_norm"] = norm.detach()
            optimizer.step()

        done = step + 1
        values = context.mean({k: float(v.detach()) for k, v in parts.items()})
        history["train"].append({"step": done, **values,
                                 "seconds": round(time.perf_counter() - began, 4)})
        yield Progress(step=done, total=total, message=f"loss {values['loss']:.4g}")
        if context.is_main:
            yield Metrics(step=done, values=values, phase="train")
        if cfg.validate_every and done % cfg.validate_every == 0 and dataset.validation_size:
            if context.is_main:
                scores = validate(model, dataset, objective, device)
                history["val"].append({"step": done, **scores})
                yield Metrics(step=done, values=scores, phase="val")
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
            last_saved = (done, save(done))
            if context.is_main:
                yield CheckpointSaved(step=done, path=last_saved[1])
    if last_saved is None or last_saved[0] != max(total, start):
        last_saved = (max(total, start), save(max(total, start)))
        if context.is_main:
            yield CheckpointSaved(step=last_saved[0], path=last_saved[1])
    yield Finished(result={
        "checkpoint": last_saved[1], "step": last_saved[0], "history": history,
        "weights_sha256": weights_digest(model), "output_dir": Path(cfg.output_dir),
        "skipped_steps": skipped,
    })
