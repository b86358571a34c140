"""What a model is, stored with its weights: :class:`ModelSpec`, and a loaded model, :class:`LoadedModel`.

A spec says what inference needs to use a network without inspecting it: its kind, the
dimensionality, the grid its inputs are resampled to, how intensities are normalised and the
similarity it was trained with. :func:`deepreg_core.zoo.publish` writes it into the safetensors
header's metadata (``deepreg_core.spec``, JSON), so a weights file describes itself; a folder
without it (older models) gets the spec derived from its ``config.yaml``. Reading it parses JSON
only; nothing executes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from deepreg_core.training.config import TrainConfig

SPEC_KEY = "deepreg_core.spec"
KINDS = ("affine", "deformable", "global_local")
NORMALIZATION = "percentile-1-99"
"""Intensities mapped by their 1st..99th percentiles to 0..1 (:func:`~deepreg_core.preprocess.normalize_intensity`)."""


@dataclass(frozen=True)
class ModelSpec:
    """What a network is and what it expects.

    Attributes
    ----------
    name : str
        The zoo name (the folder's name), or the class name of a bare network.
    kind : {"affine", "deformable", "global_local"}
    ndim : int
        2 or 3.
    working_shape : tuple of int or None
        The grid the pair is resampled to before the network (the training grid); None runs the
        network on the fixed image's own grid (a bare network passed by a script).
    normalization : str
        How intensities are normalised before the network (``"percentile-1-99"``).
    similarity : str
        The image similarity it was trained with (the default for its refinement).
    """

    name: str
    kind: str
    ndim: int
    working_shape: tuple[int, ...] | None
    normalization: str = NORMALIZATION
    similarity: str = "lncc"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model spec: kind must be one of {KINDS}, got {self.kind!r}.")
        if self.ndim not in (2, 3):
            raise ValueError(f"model spec: ndim must be 2 or 3, got {self.ndim!r}.")
        if self.working_shape is not None and len(self.working_shape) != self.ndim:
            raise ValueError(
                f"model spec: working_shape {list(self.working_shape)} has "
                f"{len(self.working_shape)} sizes for a {self.ndim}D model."
            )

    @property
    def is_affine(self) -> bool:
        """True for a model that predicts one affine matrix."""
        return self.kind == "affine"

    def to_json(self) -> str:
        """The spec as one JSON line (what goes into the weights' metadata)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: object = "spec") -> ModelSpec:
        """Parse :meth:`to_json`'s output; ValueError (naming ``source``) for anything else."""
        try:
            raw = json.loads(text)
            shape = raw.get("working_shape")
            return cls(
                name=str(raw["name"]), kind=str(raw["kind"]), ndim=int(raw["ndim"]),
                working_shape=None if shape is None else tuple(int(n) for n in shape),
                normalization=str(raw.get("normalization", NORMALIZATION)),
                similarity=str(raw.get("similarity", "lncc")),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(
                f"{source}: the stored model spec is not valid ({type(error).__name__}); "
                "republish the model with deepreg_core.zoo.publish."
            ) from None

    @classmethod
    def from_config(cls, name: str, config: TrainConfig) -> ModelSpec:
        """The spec a training config implies."""
        return cls(name=name, kind=config.model.kind, ndim=config.model.ndim,
                   working_shape=tuple(int(n) for n in config.data.shape),
                   similarity=config.loss.similarity)

    @classmethod
    def of_network(cls, network: nn.Module) -> ModelSpec:
        """The spec of a bare network (not from the zoo): its kind and ndim, its own grid."""
        from deepreg_core.models import AffineNet, GlobalLocalNet

        kind = ("affine" if isinstance(network, AffineNet) else
                "global_local" if isinstance(network, GlobalLocalNet) else "deformable")
        ndim = getattr(network, "ndim", None)
        if ndim not in (2, 3):
            raise TypeError(
                f"model: expected a deepreg_core network (AffineNet, DeformableNet, "
                f"GlobalLocalNet) or a zoo name, got {type(network).__name__}."
            )
        return cls(name=type(network).__name__, kind=kind, ndim=int(ndim), working_shape=None)


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode together with its spec (and, for zoo models, its config).

    Attributes
    ----------
    network : nn.Module
        Takes ``(fixed, moving)`` ``(B, C, *spatial)`` and returns a
        :class:`~deepreg_core.models.RegistrationOutput`.
    spec : ModelSpec
    config : TrainConfig or None
        The training config it was built from; None for a bare network.
    """

    network: Any
    spec: ModelSpec
    config: Any = None

    @property
    def name(self) -> str:
        """The spec's name."""
        return self.spec.name

    def __call__(self, fixed: Any, moving: Any) -> Any:
        """Run the network on a pair already on its working grid (see :meth:`working_shape`)."""
        return self.network(fixed, moving)

    def working_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The grid the network runs on for a pair on ``shape``."""
        return tuple(self.spec.working_shape) if self.spec.working_shape else tuple(shape)


def spec_metadata(spec: ModelSpec) -> Mapping[str, str]:
    """The safetensors metadata that stores ``spec``."""
    return {SPEC_KEY: spec.to_json()}
