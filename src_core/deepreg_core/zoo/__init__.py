"""The pretrained model zoo: models that ship inside the package, plus the user's own.

A model is a folder holding ``config.yaml`` (a :class:`~deepreg_core.training.config.TrainConfig`:
the architecture, the working grid it was trained on and its loss), ``weights.safetensors`` and
``card.md`` (training data, input expectations, measured accuracy and speed). Shipped models live in
``deepreg_core/zoo/models/<name>/``; models trained by the user (CLI or the napari Train widget) live
in the user model folder, ``$DEEPREG_HOME/models`` (default ``~/.deepreg/models``), and are listed
next to them. Loading never executes code: weights are safetensors.

A folder is validated as a whole before any network is built (:func:`check_model_folder`): its
config must load (through the alias-free YAML reader), and every weight's shape, read from the
safetensors header, must be the one the config implies. A broken user model is listed as broken
(:func:`broken_models`) and never hides or breaks the others.

Examples
--------
>>> from deepreg_core import zoo
>>> "deformable-2d" in zoo.list_models()  # doctest: +SKIP
True
>>> model = zoo.load_model("deformable-2d")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SHIPPED_DIR = Path(__file__).parent / "models"
REQUIRED_FILES = ("config.yaml", "weights.safetensors")


def user_model_dir() -> Path:
    """The folder where user-trained models are saved and found (``$DEEPREG_HOME/models``)."""
    home = os.environ.get("DEEPREG_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".deepreg"
    return base / "models"


@dataclass(frozen=True)
class ZooEntry:
    """A model folder: its name, where it is, and whether it ships with the package."""

    name: str
    path: Path
    shipped: bool

    @property
    def card(self) -> str:
        card = self.path / "card.md"
        return card.read_text(encoding="utf-8") if card.is_file() else f"# {self.name}\n(no card)"

    def config(self):
        """The model's :class:`~deepreg_core.training.config.TrainConfig`."""
        from deepreg_core.training.config import load_config

        return load_config(self.path / "config.yaml")

    def problem(self) -> str | None:
        """Why this folder cannot be loaded (one line), or None when it is a valid model."""
        try:
            check_model_folder(self.path)
        except (ValueError, TypeError, FileNotFoundError, OSError) as error:
            return str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return None


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in REQUIRED_FILES)


def entries() -> dict[str, ZooEntry]:
    """All models by name: shipped first, then the user's (a user model never hides a shipped one)."""
    found: dict[str, ZooEntry] = {}
    for root, shipped in ((SHIPPED_DIR, True), (user_model_dir(), False)):
        if not root.is_dir():
            continue
        for path in sorted(root.iterdir()):
            if _is_model_dir(path) and path.name not in found:
                found[path.name] = ZooEntry(path.name, path, shipped)
    return found


def check_model_folder(path: str | os.PathLike):
    """Validate a model folder as a whole and return its config (builds no network).

    Raises
    ------
    FileNotFoundError
        A required file is missing.
    ValueError
        The config is empty or invalid, the weights file is not readable safetensors, or a
        weight's name or shape is not the one the config implies.
    """
    from deepreg_core.training.checkpoint import check_weights_fit, tensor_shapes

    path = Path(path)
    for required in REQUIRED_FILES:
        if not (path / required).is_file():
            raise FileNotFoundError(f"{path}: the model folder has no {required}.")
    from deepreg_core.training.config import load_config

    cfg = load_config(path / "config.yaml")
    weights = path / "weights.safetensors"
    check_weights_fit(cfg.model, tensor_shapes(weights), weights)
    return cfg


def broken_models() -> dict[str, str]:
    """The models that cannot be loaded, by name, each with the reason (one line)."""
    found = {name: entry.problem() for name, entry in entries().items()}
    return {name: problem for name, problem in found.items() if problem is not None}


def list_models(ndim: int | None = None) -> list[str]:
    """Names of the loadable models, optionally only those for ``ndim``-D images.

    Broken folders are left out (see :func:`broken_models`).
    """
    names = []
    for name, entry in entries().items():
        if entry.problem() is not None:
            continue
        if ndim is None or entry.config().model.ndim == ndim:
            names.append(name)
    return names


def get(name_or_path: str | os.PathLike) -> ZooEntry:
    """Find a model by zoo name or by the path of a model folder."""
    path = Path(name_or_path)
    if _is_model_dir(path):
        return ZooEntry(path.name, path.resolve(), shipped=False)
    found = entries()
    if str(name_or_path) in found:
        return found[str(name_or_path)]
    raise ValueError(
        f"model: expected a zoo name ({', '.join(found) or 'none installed'}) or a folder holding "
        f"{' and '.join(REQUIRED_FILES)}, got {str(name_or_path)!r}."
    )


def model_card(name: str) -> str:
    """The model card (markdown) of a zoo model."""
    return get(name).card


def load_model(name_or_path: str | os.PathLike, device: str | None = None):
    """Build a model from its config and load its safetensors weights (no code is executed).

    Returns the model in eval mode, with ``model.train_config`` set to its ``TrainConfig`` and
    ``model.zoo_name`` to its name.
    """
    import torch

    from deepreg_core.models import build_model
    from deepreg_core.training.checkpoint import load_state, read_tensors

    entry = get(name_or_path)
    cfg = check_model_folder(entry.path)
    state = read_tensors(entry.path / "weights.safetensors")
    model = build_model(cfg.model)
    load_state(model, state, entry.path / "weights.safetensors")
    model.eval()
    model.train_config = cfg
    model.zoo_name = entry.name
    if device is not None:
        model.to(torch.device(device))
    return model
