"""Make the bundled sample pairs (deterministic; run from the repository root).

    python sample_data/make_samples.py

Writes, into ``sample_data/``:
- ``brain3d_{fixed,moving}.nii.gz`` and ``brain3d_{fixed,moving}_labels.nii.gz``: nilearn's MNI152
  T1 template at 2 mm (99 x 117 x 95) and the same brain under a seeded random smooth deformation
  plus a small affine (labels: 0 background, 1 grey matter, 2 white matter), in MNI space.
- ``brain2d_*``: an axial 2 mm slice of the same, with its own deformation.
Images are stored as uint8 (0..255) to keep the files small; the registration normalises
intensities anyway. The ground truth is reproduced with
``deepreg_core.synth.mni_pair(shape, generator=SEED, ...)`` and the options below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepreg_core.image import Image
from deepreg_core.io import write_image
from deepreg_core.synth import mni_pair

HERE = Path(__file__).parent
SEED_3D, SEED_2D = 20261121, 20261122
OPTIONS = dict(deformable=True, affine=True, velocity_std=2.5, rotation=6.0, scale=0.05,
               shear=0.02, translation=3.0)
MNI_2MM = np.array([[2.0, 0, 0, -98.0], [0, 2.0, 0, -134.0], [0, 0, 2.0, -72.0], [0, 0, 0, 1]])


def _save(name: str, data, affine, labels: bool = False) -> None:
    array = data[0, 0].numpy()
    array = array.astype(np.uint8) if labels else np.round(array * 255).astype(np.uint8)
    write_image(Image(array, affine), HERE / name)


def main() -> None:
    pair = mni_pair((99, 117, 95), SEED_3D, **OPTIONS)
    for role in ("fixed", "moving"):
        _save(f"brain3d_{role}.nii.gz", getattr(pair, role), MNI_2MM)
        _save(f"brain3d_{role}_labels.nii.gz", getattr(pair, f"{role}_labels"), MNI_2MM, True)
    pair2 = mni_pair((117, 99), SEED_2D, **OPTIONS)
    affine2 = np.diag([2.0, 2.0, 1.0])
    for role in ("fixed", "moving"):
        _save(f"brain2d_{role}.nii.gz", getattr(pair2, role), affine2)
        _save(f"brain2d_{role}_labels.nii.gz", getattr(pair2, f"{role}_labels"), affine2, True)
    print("wrote", sorted(p.name for p in HERE.glob("*.nii.gz")))


if __name__ == "__main__":
    main()
