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
>>> model = zoo.load("deformable-2d")  # doctest: +SKIP
>>> model.spec.kind, model.spec.ndim  # doctest: +SKIP
('deformable', 2)
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


def read_spec(path: str | os.PathLike, config=None):
    """The :class:`~deepreg_core.zoo.spec.ModelSpec` stored in a model folder's weights.

    Read from the safetensors header's metadata (JSON, no code runs); a folder published before
    specs were stored gets the spec its ``config.yaml`` implies. A stored spec that disagrees
    with the config (kind or dimensionality) is refused: the folder was assembled by hand.
    """
    from deepreg_core.training.checkpoint import tensor_metadata
    from deepreg_core.zoo.spec import SPEC_KEY, ModelSpec

    path = Path(path)
    config = check_model_folder(path) if config is None else config
    implied = ModelSpec.from_config(path.name, config)
    stored = tensor_metadata(path / "weights.safetensors").get(SPEC_KEY)
    if stored is None:
        return implied
    spec = ModelSpec.from_json(stored, path / "weights.safetensors")
    if (spec.kind, spec.ndim) != (implied.kind, implied.ndim):
        raise ValueError(
            f"{path}: the weights describe a {spec.ndim}D {spec.kind} model but config.yaml a "
            f"{implied.ndim}D {implied.kind} one; the folder mixes two models. Republish it."
        )
    return spec


def load(name_or_path: str | os.PathLike, device: str | None = None):
    """A zoo model as a :class:`~deepreg_core.zoo.spec.LoadedModel` (network, spec, config).

    The folder is validated as a whole first (:func:`check_model_folder`), then the network is
    built from its config and the safetensors weights loaded (no code is executed). The network
    is in eval mode, on ``device`` (default: the CPU).

    Examples
    --------
    >>> loaded = load("deformable-2d")  # doctest: +SKIP
    >>> loaded.spec.kind, loaded.spec.working_shape  # doctest: +SKIP
    ('deformable', (128, 128))
    """
    import torch

    from deepreg_core.models import build_model
    from deepreg_core.training.checkpoint import load_state, read_tensors
    from deepreg_core.zoo.spec import LoadedModel

    entry = get(name_or_path)
    cfg = check_model_folder(entry.path)
    spec = read_spec(entry.path, cfg)
    state = read_tensors(entry.path / "weights.safetensors")
    network = build_model(cfg.model)
    load_state(network, state, entry.path / "weights.safetensors")
    network.eval()
    if device is not None:
        network.to(torch.device(device))
    return LoadedModel(network, spec, cfg)


def load_model(name_or_path: str | os.PathLike, device: str | None = None):
    """Same as :func:`load` (kept for scripts written against the first release)."""
    return load(name_or_path, device)


KIND_ALIASES = {"affine": "affine", "deformable": "deformable", "global-local": "global-local",
                "global_local": "global-local", "auto": "deformable"}
# Where "auto" picks another network than the deformable one, by (preset, ndim): the network
# measured best for that preset on held-out cases (bench/results/zoo_*.json, real_scans*.json).
# 2D fast (network only): global-local-2d's endpoint error is 0.95 mm on held-out MNI slices
# against deformable-2d's 2.28 (after the affine network: 0.36 vs 0.51 mm on dipy's real T1
# slice); with refinement (auto, accurate) deformable-2d is as good (0.39 vs 0.45 mm on slices).
AUTO_BY_PRESET: dict[tuple[str | None, int], str] = {("fast", 2): "global-local"}


def resolve_name(kind_or_name: str, ndim: int, preset: str | None = None) -> str:
    """Turn ``"affine"``, ``"deformable"``, ``"global-local"`` (or ``"auto"``) into the zoo name
    for ``ndim``-D images (``"deformable-3d"``); any other text is returned as it is.

    ``"auto"`` is the deformable model, except for the presets of :data:`AUTO_BY_PRESET`.
    The one place the widget and the CLI map a model kind to a model.

    Examples
    --------
    >>> resolve_name("global-local", 2), resolve_name("my-model", 3)
    ('global-local-2d', 'my-model')
    >>> resolve_name("auto", 2), resolve_name("auto", 2, preset="fast")
    ('deformable-2d', 'global-local-2d')
    """
    key = str(kind_or_name).strip().lower()
    kind = KIND_ALIASES.get(key)
    if kind is not None and key == "auto":
        kind = AUTO_BY_PRESET.get((preset, int(ndim)), kind)
    return f"{kind}-{int(ndim)}d" if kind is not None else str(kind_or_name)


def publish(checkpoint: str | os.PathLike, target: str | os.PathLike, card: str,
            name: str | None = None) -> Path:
    """Make ``target`` a model folder from a training checkpoint, atomically.

    Writes ``config.yaml``, ``card.md`` and ``weights.safetensors`` (the checkpoint's tensors with
    the :class:`~deepreg_core.zoo.spec.ModelSpec` in the header's metadata) into a temporary
    folder inside ``target`` and renames them into place, the weights last, so a listing (which
    needs the weights) never sees a half-written model. Used by the napari Train widget, the
    CLI and ``bench/publish_model.py``.

    Parameters
    ----------
    checkpoint : path
        A checkpoint folder (``config.yaml`` + ``weights.safetensors``).
    target : path
        The model folder (created; anything else in it, such as ``checkpoints/``, stays).
    card : str
        The model card (markdown).
    name : str, optional
        The model's name in its spec (default: the target folder's name).
    """
    import shutil
    import tempfile

    from safetensors.torch import save_file

    from deepreg_core.training.checkpoint import CONFIG, WEIGHTS, read_tensors
    from deepreg_core.training.config import load_config
    from deepreg_core.zoo.spec import ModelSpec, spec_metadata

    checkpoint, target = Path(checkpoint), Path(target)
    cfg = load_config(checkpoint / CONFIG)
    spec = ModelSpec.from_config(name or target.name, cfg)
    tensors = read_tensors(checkpoint / WEIGHTS)
    target.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=target, prefix=".publish-"))
    try:
        shutil.copyfile(checkpoint / CONFIG, temp / CONFIG)
        (temp / "card.md").write_text(card, encoding="utf-8")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(temp / WEIGHTS),
                  metadata=dict(spec_metadata(spec)))
        for file_name in (CONFIG, "card.md", WEIGHTS):
            os.replace(temp / file_name, target / file_name)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target
