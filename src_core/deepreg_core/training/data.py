"""Training and validation pairs as a reproducible stream.

A dataset answers ``pair(step, index)``: the ``index``-th pair of training step ``step``. Random
datasets draw it from a generator seeded by ``(seed, stream, step, index)`` alone, so a resumed
run sees exactly the pairs the uninterrupted run would have seen, and distributed ranks get
different pairs by asking for different indices. Validation pairs come from their own stream:
fixed for a given seed and never among the training pairs.

Example
-------
>>> from deepreg_core.training.config import DataConfig
>>> data = SyntheticPairs(DataConfig(shape=[32, 32]), seed=0)
>>> data.batch(step=0, batch_size=2).fixed.shape
torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from deepreg_core.preprocess import network_input, resize_labels
from deepreg_core.synth import (
    SyntheticPair,
    mni_pair,
    random_crop,
    random_field_of_view,
    synthetic_pair,
)
from deepreg_core.training.config import DataConfig

TRAIN_STREAM, VALIDATION_STREAM = 0, 1
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".tif", ".tiff", ".png")
_LABEL_TAG = re.compile(r"_(labels|seg)$")


def pair_seed(seed: int, stream: int, step: int, index: int) -> int:
    """A 63-bit seed that depends only on ``(seed, stream, step, index)`` (NumPy SeedSequence)."""
    words = np.random.SeedSequence([seed, stream, step, index]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


@dataclass(frozen=True)
class Batch:
    """A batch of pairs, tensors ``(B, C, *spatial)``; optional parts are None when absent.

    ``displacement`` is the ground truth ``(B, ndim, *spatial)`` (synthetic data only);
    labels are int64 ``(B, 1, *spatial)``.
    """

    fixed: torch.Tensor
    moving: torch.Tensor
    fixed_labels: torch.Tensor | None = None
    moving_labels: torch.Tensor | None = None
    displacement: torch.Tensor | None = None

    @property
    def has_labels(self) -> bool:
        return self.fixed_labels is not None and self.moving_labels is not None

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device``."""
        moved = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
            for f in fields(self)
        }
        return Batch(**moved)

    @staticmethod
    def stack(pairs: Sequence[Batch | SyntheticPair]) -> Batch:
        """Concatenate single pairs along the batch axis (a part present in all, else None)."""
        if not pairs:
            raise ValueError("pairs: expected at least one pair, got none.")

        def cat(name: str) -> torch.Tensor | None:
            parts = [getattr(p, name, None) for p in pairs]
            if any(p is None for p in parts):
                return None
            return torch.cat(parts)

        return Batch(cat("fixed"), cat("moving"), cat("fixed_labels"), cat("moving_labels"),
                     cat("displacement"))


class PairDataset:
    """Base class: subclasses implement :meth:`pair` and :meth:`validation_pair`."""

    n_labels: int | None = None
    validation_size: int = 0

    def pair(self, step: int, index: int) -> Batch | SyntheticPair:
        raise NotImplementedError

    def validation_pair(self, index: int) -> Batch | SyntheticPair:
        raise NotImplementedError

    def batch(self, step: int, batch_size: int, offset: int = 0) -> Batch:
        """Pairs ``offset .. offset + batch_size - 1`` of step ``step``, stacked."""
        return Batch.stack([self.pair(step, offset + i) for i in range(batch_size)])

    def validation(self) -> list[Batch]:
        """The fixed validation pairs, one per batch."""
        return [Batch.stack([self.validation_pair(i)]) for i in range(self.validation_size)]


class SyntheticPairs(PairDataset):
    """SynthMorph-style pairs (:func:`~deepreg_core.synth.synthetic_pair`) from ``config``."""

    def __init__(self, config: DataConfig, seed: int) -> None:
        self.config = config
        self.seed = int(seed)
        self.n_labels = config.n_labels
        self.validation_size = config.validation_count

    def _draw(self, stream: int, step: int, index: int) -> SyntheticPair:
        c = self.config
        g = torch.Generator().manual_seed(pair_seed(self.seed, stream, step, index))
        return synthetic_pair(
            tuple(c.shape), g, deformable=c.deformable, affine=c.affine,
            same_contrast=c.same_contrast, n_labels=c.n_labels, velocity_std=c.velocity_std,
            smoothness=c.smoothness, rotation=c.rotation, scale=c.scale, shear=c.shear,
            translation=c.translation, max_blur=c.max_blur, max_bias=c.max_bias,
            max_noise=c.max_noise,
        )

    def _cropped(self, stream: int, step: int, index: int) -> SyntheticPair:
        pair = self._draw(stream, step, index)
        if self.config.crop < 1.0:
            # its own stream, so the pairs themselves are the ones drawn without cropping
            g = torch.Generator().manual_seed(pair_seed(self.seed, stream + 4, step, index))
            pair = random_crop(pair, g, self.config.crop)
        if self.config.fov < 1.0:
            g = torch.Generator().manual_seed(pair_seed(self.seed, stream + 6, step, index))
            if float(torch.rand(1, generator=g)) < 0.5:  # half the pairs keep the whole view
                pair = random_field_of_view(pair, g, self.config.fov)
        return pair

    def pair(self, step: int, index: int) -> SyntheticPair:
        return self._cropped(TRAIN_STREAM, step, index)

    def validation_pair(self, index: int) -> SyntheticPair:
        return self._cropped(VALIDATION_STREAM, 0, index)


class MNIPairs(SyntheticPairs):
    """Deformed MNI152 brains (:func:`~deepreg_core.synth.mni_pair`); labels 0 bg, 1 GM, 2 WM."""

    def __init__(self, config: DataConfig, seed: int) -> None:
        super().__init__(config, seed)
        self.n_labels = 3

    def _draw(self, stream: int, step: int, index: int) -> SyntheticPair:
        c = self.config
        g = torch.Generator().manual_seed(pair_seed(self.seed, stream, step, index))
        return mni_pair(
            tuple(c.shape), g, deformable=c.deformable, affine=c.affine,
            same_contrast=c.same_contrast, velocity_std=c.velocity_std, smoothness=c.smoothness,
            rotation=c.rotation, scale=c.scale, shear=c.shear, translation=c.translation,
            max_noise=c.max_noise, orientation=c.mni_orientation, pose=c.pose,
        )


class MixedPairs(SyntheticPairs):
    """Each pair is MNI (probability ``config.mni_fraction``) or synthetic, drawn per pair.

    The choice comes from the pair's own seed, so the stream stays a function of
    ``(seed, stream, step, index)``; labels use ``max(n_labels, 3)`` channels.
    """

    def __init__(self, config: DataConfig, seed: int) -> None:
        super().__init__(config, seed)
        self.synthetic = SyntheticPairs(config, seed)
        self.mni = MNIPairs(config, seed)
        self.n_labels = max(config.n_labels, 3)

    def _draw(self, stream: int, step: int, index: int) -> SyntheticPair:
        coin = np.random.default_rng(pair_seed(self.seed, stream + 2, step, index)).random()
        source = self.mni if coin < self.config.mni_fraction else self.synthetic
        return source._draw(stream, step, index)


# ----------------------------------------------------------------------------- image folders


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def _find_labels(path: Path) -> Path | None:
    """``<name>_labels.<ext>`` or ``<name>_seg.<ext>`` next to ``path``, if there is one."""
    for tag in ("labels", "seg"):
        for suffix in IMAGE_SUFFIXES:
            candidate = path.parent / f"{_stem(path)}_{tag}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _as_tensor(array: np.ndarray, shape: tuple[int, ...], path: Path) -> torch.Tensor:
    data = np.squeeze(np.asarray(array))
    if data.ndim != len(shape):
        raise ValueError(
            f"{path}: expected a {len(shape)}D image for data.shape {list(shape)}, got data "
            f"shape {np.asarray(array).shape}."
        )
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None, None]


def _image(array: np.ndarray, shape: tuple[int, ...], path: Path) -> torch.Tensor:
    """The network input of an image file: the same :func:`network_input` inference uses."""
    image = _as_tensor(array, shape, path)
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{path}: expected finite intensities, got NaN or infinite values.")
    return network_input(image, shape)


class FolderPairs(PairDataset):
    """Pairs of image files from ``config.folder``, resized to ``config.shape``.

    Images are NIfTI, TIFF or PNG (read with :func:`deepreg_core.io.read_image`), normalised so
    their 1st..99th percentiles span ``[0, 1]``. A file ``<name>_labels.<ext>`` or
    ``<name>_seg.<ext>`` next to an image is its label map. A seeded ``validation_fraction`` of
    the files (at most ``validation_count`` pairs) is held out. ``pairing="pairwise"`` draws
    random ordered pairs of distinct files; ``"atlas"`` registers every file to ``config.atlas``.
    """

    def __init__(self, config: DataConfig, seed: int) -> None:
        from deepreg_core.io import read_image

        self.config = config
        self.seed = int(seed)
        folder = Path(config.folder) if config.folder is not None else None
        if folder is None or not folder.is_dir():
            raise ValueError(f"data.folder: expected an existing folder of images, got {folder}.")
        shape = tuple(config.shape)
        atlas = Path(config.atlas).resolve() if config.atlas is not None else None
        files = sorted(p for p in folder.iterdir()
                       if _is_image(p) and not _LABEL_TAG.search(_stem(p)) and p.resolve() != atlas)

        def load(path: Path) -> Batch:
            image = _image(read_image(path).data, shape, path)
            label_path = _find_labels(path)
            labels = None
            if label_path is not None:
                labels = resize_labels(
                    _as_tensor(read_image(label_path, labels=True).data, shape, label_path), shape
                )
            return Batch(image, image, labels, labels)

        self.atlas = load(atlas) if atlas is not None else None
        needed = 1 if self.atlas is not None else 2
        images = [load(p) for p in files]
        loaded = images + ([self.atlas] if self.atlas is not None else [])
        self.n_labels, self.label_values = self._relabel(loaded)
        images = loaded[: len(images)]
        if self.atlas is not None:
            self.atlas = loaded[-1]
        order = np.random.default_rng(self.seed).permutation(len(images))
        n_val = int(round(config.validation_fraction * len(images)))
        if len(images) - n_val < needed:
            raise ValueError(
                f"data.folder: expected at least {needed + n_val} images in {folder} ({needed} "
                f"for training, {n_val} for validation), found {len(images)}. Add images or "
                "lower data.validation_fraction."
            )
        self.train_images = [images[i] for i in order[n_val:]]
        self.val_images = [images[i] for i in order[:n_val]]
        if self.atlas is not None:
            self.validation_size = min(config.validation_count, len(self.val_images))
        else:
            self.validation_size = (min(config.validation_count, len(self.val_images))
                                    if len(self.val_images) >= 2 else 0)

    @staticmethod
    def _relabel(images: list[Batch]) -> tuple[int | None, list[int]]:
        """Map the label values found in the files to ``0 .. K - 1`` in place (0 stays 0)."""
        maps = [b.fixed_labels for b in images if b.fixed_labels is not None]
        if not maps:
            return None, []
        values = torch.unique(torch.cat([torch.unique(m) for m in maps] + [torch.zeros(1).long()]))
        for i, b in enumerate(images):
            if b.fixed_labels is not None:
                labels = torch.searchsorted(values, b.fixed_labels)
                images[i] = Batch(b.fixed, b.moving, labels, labels)
        return len(values), [int(v) for v in values]

    @staticmethod
    def _join(fixed: Batch, moving: Batch) -> Batch:
        return Batch(fixed.fixed, moving.moving, fixed.fixed_labels, moving.moving_labels)

    def pair(self, step: int, index: int) -> Batch:
        rng = np.random.default_rng(pair_seed(self.seed, TRAIN_STREAM, step, index))
        if self.atlas is not None:
            return self._join(self.atlas, self.train_images[rng.integers(len(self.train_images))])
        i, j = rng.choice(len(self.train_images), size=2, replace=False)
        return self._join(self.train_images[i], self.train_images[j])

    def validation_pair(self, index: int) -> Batch:
        if self.atlas is not None:
            return self._join(self.atlas, self.val_images[index])
        n = len(self.val_images)
        return self._join(self.val_images[index % n], self.val_images[(index + 1) % n])


def make_dataset(config: DataConfig, seed: int) -> PairDataset:
    """The dataset ``config.source`` names: synthetic, folder or MNI pairs.

    Example
    -------
    >>> type(make_dataset(DataConfig(shape=[32, 32]), seed=0)).__name__
    'SyntheticPairs'
    """
    if config.source == "synthetic":
        return SyntheticPairs(config, seed)
    if config.source == "mni":
        return MNIPairs(config, seed)
    if config.source == "mixed":
        return MixedPairs(config, seed)
    return FolderPairs(config, seed)
