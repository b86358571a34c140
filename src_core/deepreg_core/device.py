"""Choosing the compute device: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"`` into a usable device.

    ``"auto"`` picks CUDA when present, then MPS, else the CPU. Asking for a device that is not
    there raises a ``ValueError`` that says which devices are available.
    """
    if isinstance(name, torch.device):
        return name
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text.split(":")[0] not in DEVICE_CHOICES[1:]:
        raise ValueError(f"device: expected one of {DEVICE_CHOICES} (or 'cuda:N'), got {name!r}.")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device: {name!r} was asked for but this machine has no CUDA GPU visible to torch "
            f"(torch {torch.__version__}). Use device='auto' or 'cpu'."
        )
    if text == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError("device: 'mps' was asked for but Apple MPS is not available here.")
    return torch.device(text)
