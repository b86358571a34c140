"""Data-parallel training under ``torchrun`` (PyTorch DDP; gloo on CPU, NCCL on GPUs).

:func:`~deepreg_core.training.loop.train` calls :func:`setup`: when ``torchrun`` has set
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (and ``WORLD_SIZE > 1``) it joins the process group, wraps
the model in ``DistributedDataParallel``, gives each rank different pairs (rank ``r`` draws pair
indices ``r * B .. r * B + B - 1`` of every step) and lets only rank 0 validate, write
checkpoints and report metrics. Without those variables it is a single process.

Run it with::

    torchrun --nproc_per_node=2 -m deepreg_core.training.torchrun recipe.yaml

(``deepreg-core train recipe.yaml`` under ``torchrun`` does the same).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from deepreg_core.device import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes
    ----------
    rank, world_size, local_rank : int
    device : torch.device
        This process's device (``cuda:<local_rank>`` on GPUs).
    owns_group : bool
        Whether :func:`setup` created the process group (and :func:`teardown` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """More than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, saves and reports."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in ``DistributedDataParallel`` when distributed, else unchanged."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank (a stop request, say)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def mean(self, values: Mapping[str, float]) -> dict[str, float]:
        """Average scalar metrics over the ranks (same keys on every rank)."""
        if not self.enabled or not values:
            return dict(values)
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], device=self.device,
                              dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return {k: float(v) / self.world_size for k, v in zip(keys, tensor.tolist())}

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.enabled:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether the environment describes a multi-process run (``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(device: str | torch.device = "auto") -> DistributedContext:
    """Join the ``torchrun`` process group if there is one, and pick this process's device.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "mps"} or torch.device
        The configured device; under ``torchrun`` with CUDA each rank takes ``cuda:LOCAL_RANK``.

    Returns
    -------
    DistributedContext

    Example
    -------
    >>> setup("cpu").world_size  # outside torchrun
    1
    """
    resolved = resolve_device(device)
    if not launched_by_torchrun():
        return DistributedContext(device=resolved)
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        owns = True
    return DistributedContext(rank, world_size, local_rank, resolved, owns)


def teardown(context: DistributedContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()
