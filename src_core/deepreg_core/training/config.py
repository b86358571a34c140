"""Typed, bounded training configuration (pydantic v2) and its YAML files.

A :class:`TrainConfig` says everything a run needs: the network (:class:`~deepreg_core.models.
ModelConfig`), the loss, the data, the optimiser, the seed, the device and where to write. Unknown
keys and out-of-range values are refused with an error that names the field, e.g.
``loss.similarity_weight``. The same file is saved next to every checkpoint and shipped with
every zoo model (``config.yaml``).

Example
-------
>>> cfg = TrainConfig(model={"ndim": 2, "features": [8, 16]}, data={"shape": [32, 32]},
...                   optim={"steps": 10})
>>> cfg.loss.similarity, cfg.data.source
('lncc', 'synthetic')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deepreg_core._files import atomic_write_text
from deepreg_core.models.config import ModelConfig

Size = Annotated[int, Field(ge=8, le=1024)]
"""One axis of the training grid, voxels."""


class LossConfig(BaseModel):
    """What the network minimises: ``sum_k weight_k * term_k``.

    Parameters
    ----------
    similarity : {"mse", "ncc", "lncc", "mi"}
        Image similarity between the fixed and the warped moving image (``"mi"`` and ``"lncc"``
        suit multimodal / contrast-varying data).
    similarity_weight : float
        Weight of the similarity; 0 trains from the other terms only (e.g. supervised).
    lncc_window : int
        Odd window of the local NCC, voxels.
    regularizer : {"diffusion", "bending"}
        Smoothness penalty of the displacement (not applied to affine networks).
    regularization_weight : float
        Its weight.
    dice_weight : float
        Weight of the soft Dice of the warped moving labels (when the data has labels).
    supervised_weight : float
        Weight of the squared field error against the ground truth (synthetic / MNI data only).
    saliency_weighting : bool
        ``global_local`` networks: weight the similarity by the joint saliency map.
    """

    model_config = ConfigDict(extra="forbid")

    similarity: Literal["mse", "ncc", "lncc", "mi"] = "lncc"
    similarity_weight: float = Field(1.0, ge=0.0, le=1e4)
    lncc_window: int = Field(9, ge=3, le=31)
    regularizer: Literal["diffusion", "bending"] = "diffusion"
    regularization_weight: float = Field(1.0, ge=0.0, le=1e6)
    dice_weight: float = Field(0.0, ge=0.0, le=1e4)
    supervised_weight: float = Field(0.0, ge=0.0, le=1e4)
    saliency_weighting: bool = False

    @model_validator(mode="after")
    def _something_to_fit(self) -> LossConfig:
        if self.similarity_weight + self.dice_weight + self.supervised_weight <= 0:
            raise ValueError(
                "loss: similarity_weight, dice_weight and supervised_weight are all 0, so "
                "nothing drives the registration. Set at least one of them > 0."
            )
        if self.lncc_window % 2 == 0:
            raise ValueError(f"loss.lncc_window: expected an odd window, got {self.lncc_window}.")
        return self


class DataConfig(BaseModel):
    """Where training pairs come from and the grid they are resampled to.

    Parameters
    ----------
    source : {"synthetic", "folder", "mni", "mixed"}
        SynthMorph-style random pairs; image files in ``folder``; deformed MNI152 brains
        (needs nilearn); or ``"mixed"``: each pair is an MNI pair with probability
        ``mni_fraction``, else a synthetic one (contrast-agnostic and brain-like at once).
    mni_fraction : float
        ``mixed`` only: the share of MNI pairs.
    mni_orientation : {"axial", "random"}
        2D MNI pairs: the fixed axial slice, or random slices in all three orientations with
        flips and transposes (what a 2D model meant for any slice should see).
    shape : list of int
        Training grid (2 or 3 sizes, array order); must match ``model.ndim``.
    pairing : {"pairwise", "atlas"}
        ``folder`` only: random pairs of files, or every file registered to ``atlas``.
    folder, atlas : path
        ``folder`` data: a folder of ``.nii/.nii.gz/.tif/.tiff/.png`` images (optional labels in
        ``<name>_labels.<ext>`` or ``<name>_seg.<ext>``) and, for atlas pairing, the atlas file.
    validation_count : int
        Number of fixed validation pairs (at most, for folder data).
    validation_fraction : float
        ``folder`` only: fraction of files held out for validation.
    n_labels : int
        ``synthetic`` only: labels of each random label map.
    deformable, affine : bool
        Which ground-truth parts synthetic / MNI pairs get.
    velocity_std, smoothness : float
        Largest standard deviation of the random velocity field and its control-point spacing,
        voxels (smoothness ``None``: a quarter of the smallest axis).
    rotation, scale, shear, translation : float
        Largest affine magnitudes: degrees, relative scale change, shear, voxels.
    same_contrast : bool
        Render fixed and moving with the same contrast (monomodal); False trains multimodal.
    max_blur, max_bias, max_noise : float
        ``synthetic`` rendering: largest blur (voxels), log bias-field std, noise std.
    pose : bool
        MNI pairs: the fixed image too gets a random pose (and a random contrast half of the
        time when ``same_contrast`` is false), so that the template's own position is never a
        cue (what an affine network for any subject needs).
    crop : float
        Random pairs: cut the same random box (each axis ``crop .. 1`` of its extent) from both
        images, labels and field and resize it back to ``shape``: partial fields of view and other
        voxel aspect ratios, ground truth kept exact. 1 (default) never crops.
    fov : float
        Random pairs: half of them are blanked outside one random box (each axis ``fov .. 1``
        of its extent), the same box in both images: partial fields of view (a slab of slices)
        as inference presents them, padded rather than stretched. 1 (default) never blanks.
    """

    model_config = ConfigDict(extra="forbid")

    source: Literal["synthetic", "folder", "mni", "mixed"] = "synthetic"
    mni_fraction: float = Field(0.5, ge=0.0, le=1.0)
    mni_orientation: Literal["axial", "random"] = "axial"
    shape: list[Size] = Field(default_factory=lambda: [64, 64], min_length=2, max_length=3)
    pairing: Literal["pairwise", "atlas"] = "pairwise"
    folder: Path | None = None
    atlas: Path | None = None
    validation_count: int = Field(4, ge=0, le=10_000)
    validation_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    n_labels: int = Field(8, ge=1, le=64)
    deformable: bool = True
    affine: bool = False
    velocity_std: float = Field(2.0, ge=0.0, le=256.0)
    smoothness: float | None = Field(None, gt=0.0, le=1024.0)
    rotation: float = Field(10.0, ge=0.0, le=180.0)
    scale: float = Field(0.1, ge=0.0, lt=1.0)
    shear: float = Field(0.05, ge=0.0, le=1.0)
    translation: float = Field(2.0, ge=0.0, le=512.0)
    same_contrast: bool = False
    max_blur: float = Field(1.0, ge=0.0, le=16.0)
    max_bias: float = Field(0.3, ge=0.0, le=2.0)
    max_noise: float = Field(0.05, ge=0.0, le=1.0)
    pose: bool = False
    crop: float = Field(1.0, gt=0.0, le=1.0)
    fov: float = Field(1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _paths_present(self) -> DataConfig:
        if self.source == "folder" and self.folder is None:
            raise ValueError("data.folder: source='folder' needs a folder of images, got none.")
        if self.pairing == "atlas" and self.source != "folder":
            raise ValueError(
                f"data.pairing: 'atlas' applies to source='folder' (mni pairs already use the "
                f"template as the atlas), got source={self.source!r}. Use pairing='pairwise'."
            )
        if self.pairing == "atlas" and self.atlas is None:
            raise ValueError("data.atlas: pairing='atlas' needs the atlas image file, got none.")
        return self


class OptimConfig(BaseModel):
    """AdamW settings and run length (``steps`` optimiser steps of ``batch_size`` pairs)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0.0, le=1.0)
    steps: int = Field(1000, ge=1, le=100_000_000)
    batch_size: int = Field(1, ge=1, le=1024)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    grad_clip: float = Field(0.0, ge=0.0, le=1e6)
    """Clip the gradient's global norm to this (0: off). A step whose loss is not finite is
    always skipped, whatever this is, so one bad batch cannot poison the weights."""
    lr_milestones: list[tuple[int, float]] = Field(default_factory=list, max_length=100)
    """Piecewise-constant learning rate: ``[[step, lr], ...]``, increasing steps; from each
    ``step`` on the rate is its ``lr`` (``lr`` before the first). A function of the step alone,
    so a resumed run follows it exactly."""

    @model_validator(mode="after")
    def _milestones(self) -> OptimConfig:
        steps = [s for s, _ in self.lr_milestones]
        if any(s < 1 for s in steps) or steps != sorted(set(steps)):
            raise ValueError(f"optim.lr_milestones: expected strictly increasing steps >= 1, "
                             f"got {steps}.")
        if any(not 0.0 < lr <= 1.0 for _, lr in self.lr_milestones):
            raise ValueError("optim.lr_milestones: every learning rate must be in (0, 1].")
        return self

    def lr_at(self, step: int) -> float:
        """The learning rate of the step that starts at ``step`` (0-based).

        >>> optim = OptimConfig(lr=1e-3, lr_milestones=[(10, 5e-4)])
        >>> optim.lr_at(9), optim.lr_at(10)
        (0.001, 0.0005)
        """
        lr = self.lr
        for start, value in self.lr_milestones:
            if step >= start:
                lr = value
        return lr


class TrainConfig(BaseModel):
    """A complete training run.

    Parameters
    ----------
    model : ModelConfig
    loss : LossConfig
    data : DataConfig
    optim : OptimConfig
    seed : int
        Seeds the initial weights and the whole stream of training pairs.
    device : {"auto", "cpu", "cuda", "mps"}
        ``"auto"``: CUDA, then MPS, else CPU.
    checkpoint_every, validate_every : int
        Period in steps (0: never; a checkpoint is always written at the end).
    output_dir : path
        Checkpoints go to ``output_dir/checkpoints/step_XXXXXXXX/``.
    init_from : path, optional
        Weights to start from (fine-tuning): a ``.safetensors`` file, a checkpoint or zoo folder,
        or a ``.pt/.pth`` holding only tensors.
    init_into : str, optional
        The sub-module ``init_from`` fills, by its dotted name (e.g. ``global_net``: a
        global-to-local network whose global stage starts from a trained deformable model); the
        rest of the network keeps its fresh initialisation. Default: the whole network.
    """

    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    checkpoint_every: int = Field(500, ge=0)
    validate_every: int = Field(100, ge=0)
    output_dir: Path = Path("runs/deepreg")
    init_from: Path | None = None
    init_into: str | None = Field(None, min_length=1, max_length=200,
                                  pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if len(self.data.shape) != self.model.ndim:
            raise ValueError(
                f"data.shape: expected {self.model.ndim} sizes for model.ndim={self.model.ndim}, "
                f"got {self.data.shape}."
            )
        if self.loss.saliency_weighting and self.model.kind != "global_local":
            raise ValueError(
                f"loss.saliency_weighting: needs model.kind='global_local' (the only network "
                f"that outputs a saliency map), got {self.model.kind!r}."
            )
        if self.loss.supervised_weight > 0 and self.data.source == "folder":
            raise ValueError(
                "loss.supervised_weight: folder data has no ground-truth field; use 0, or "
                "source='synthetic' / 'mni'."
            )
        return self


MAX_CONFIG_BYTES = 1 << 20
"""A config file larger than this is refused unread (real ones are a few KB)."""


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``), so a small file cannot expand into
    an exponentially large document ("billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a config", mark
            )
        return super().compose_node(parent, index)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file safely: no code, no aliases, at most :data:`MAX_CONFIG_BYTES`.

    Errors say where (line and column), never echo the file's content.
    """
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{path}: expected a YAML config of at most {MAX_CONFIG_BYTES} bytes, got {size}."
        )
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not valid YAML: the file is not UTF-8 text.") from None
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or type(error).__name__
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ValueError(f"{path}: not valid YAML: {problem}{where}.") from None


def describe_validation_error(error: ValidationError) -> str:
    """The fields a :class:`ValidationError` names and why, without the offending input."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "config"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read and validate a YAML training config.

    The file goes through :func:`read_yaml` (no aliases, bounded size); an empty file is refused
    (write ``{}`` for every default).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the YAML is malformed, empty, or a field is unknown or out of range (the message names
        it).

    Example
    -------
    >>> cfg = load_config("recipe.yaml")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file (expected a YAML TrainConfig).")
    data = read_yaml(path)
    if data is None:
        raise ValueError(
            f"{path}: the config is empty; expected a mapping of fields (model, loss, data, "
            "optim, ...). Write {} to use every default."
        )
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a mapping of fields (model, loss, data, optim, ...), got "
            f"{type(data).__name__}."
        )
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        raise ValueError(
            f"{path}: invalid training config: {describe_validation_error(error)}"
        ) from None


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as YAML atomically (a temporary file, then ``os.replace``).

    Example
    -------
    >>> save_config(TrainConfig(), "recipe.yaml")  # doctest: +SKIP
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(path, text)
    return path
