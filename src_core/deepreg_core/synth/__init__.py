"""Synthetic image pairs with known ground truth.

Every random function here samples its parameters from a ``torch.Generator`` (or an integer seed)
and hands them to a deterministic operation, and it returns the ground truth it used, so any pair
can be replayed and tested (TorchIO's ``RandomAffine`` → ``Affine`` pattern).

- :func:`random_label_map`: SynthMorph-style label maps (smooth random noise per label, argmax).
- :func:`render_labels`: an image of random contrast from a label map (per-label intensities,
  blur, bias field, noise, values in ``[0, 1]``). Different draws give different contrasts, which
  is what makes networks trained on them contrast-agnostic (multimodal).
- :func:`random_velocity`: a smooth stationary velocity field; ``exp(v)`` is diffeomorphic.
- :func:`random_affine` = :func:`sample_affine_params` + :func:`make_affine`.
- :func:`synthetic_pair` and :func:`mni_pair` (brain-like, needs nilearn): a
  :class:`SyntheticPair` whose ``displacement`` satisfies ``warp(moving, displacement) ≈ fixed``.

The package is split by concept: :mod:`.contrast` (label maps and contrasts),
:mod:`.transforms` (velocities and affines), :mod:`.pairs` (pairs with ground truth) and
:mod:`.mni` (MNI152 brains); every public name is importable from ``deepreg_core.synth``.

Conventions are those of ``docs/conventions.md``: tensors ``(B, C, *spatial)`` in array order,
displacements in voxels of the fixed grid, affines map fixed voxel indices to moving ones.

References
----------
Hoffmann et al., "SynthMorph: learning contrast-invariant registration without acquired images",
IEEE TMI 2022.
"""

from deepreg_core.synth._common import GeneratorLike
from deepreg_core.synth.contrast import (
    Contrast,
    apply_contrast,
    finish_image,
    random_label_map,
    render_labels,
    sample_contrast,
    tissue_image,
)
from deepreg_core.synth.mni import MNI_RESOLUTIONS, mni_pair, random_mni_slice
from deepreg_core.synth.pairs import (
    SyntheticPair,
    random_crop,
    random_field_of_view,
    synthetic_pair,
)
from deepreg_core.synth.transforms import (
    AffineParams,
    make_affine,
    random_affine,
    random_velocity,
    sample_affine_params,
)

__all__ = [
    "MNI_RESOLUTIONS",
    "AffineParams",
    "Contrast",
    "GeneratorLike",
    "SyntheticPair",
    "apply_contrast",
    "finish_image",
    "make_affine",
    "mni_pair",
    "random_affine",
    "random_crop",
    "random_field_of_view",
    "random_label_map",
    "random_mni_slice",
    "random_velocity",
    "render_labels",
    "sample_affine_params",
    "sample_contrast",
    "synthetic_pair",
    "tissue_image",
]
