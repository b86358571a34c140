"""Export and import transforms for other tools: ANTs, ITK, SimpleITK, nitransforms.

Our transforms live in voxels (``docs/conventions.md``): a displacement ``u`` of shape
``(ndim, *spatial)`` maps fixed voxel ``x`` to moving voxel ``x + u(x)`` (pull), and an affine
``A`` of shape ``(ndim + 1, ndim + 1)`` maps fixed voxel indices to moving voxel indices. This
module turns them into world (physical) transforms with the images' voxel-to-world affines
``F = fixed.affine`` and ``M = moving.affine``:

- displacement: ``w(x) = M [x + u(x); 1] - F [x; 1]`` (mm), a vector at each fixed voxel;
- affine: ``W = M @ A @ inv(F)``, fixed world point to moving world point.

``Image`` worlds are RAS+ mm for NIfTI (nibabel). ITK, ANTs and SimpleITK use LPS: ``x`` and ``y``
change sign (``LPS = diag(-1, -1[, 1]) @ RAS``, in 2D ``diag(-1, -1)``). Their transforms point
the same way as ours: from a fixed physical point to the moving physical point that is sampled
there. The files written here:

- ``save_displacement_nifti``: an ITK/ANTs displacement field, a NIfTI of shape
  ``(X, Y, Z, 1, 3)`` (2D ``(X, Y, 1, 1, 2)``), header affine = the fixed image's. With
  ``convention="itk"`` (default) the vectors are LPS mm under intent 1007
  (``NIFTI_INTENT_VECTOR``), byte for byte what ITK and ANTs write: ``antsApplyTransforms -t``,
  ``sitk.DisplacementFieldTransform`` and ``nitransforms`` read it, with any ITK version. With
  ``convention="ras"`` the vectors are RAS mm under intent 1006 (``NIFTI_INTENT_DISPVECT``), the
  NIfTI standard's meaning. Intent 1006 must not hold LPS vectors: since ITK 5.4 the NIfTI reader
  treats a 3-component DISPVECT file as RAS and flips its x and y itself.
- ``save_affine_itk``: an ITK text transform (``.tfm``/``.txt``), ``AffineTransform_double_3_3``
  (or ``_2_2``) in LPS with centre 0, as ``antsRegistration`` and ``sitk.WriteTransform`` write.

Images read from TIFF/PNG have their world axes in array order; the files are still consistent
(the header carries the same world), but the axis names RAS/LPS have no anatomical meaning there.
Every write is atomic: a temporary file beside the target, then ``os.replace``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.io
import torch

from deepreg_core._files import atomic_target
from deepreg_core.image import Image

__all__ = [
    "NIFTI_INTENT_DISPVECT",
    "NIFTI_INTENT_VECTOR",
    "affine_from_world",
    "affine_to_world",
    "displacement_from_world",
    "displacement_to_world",
    "load_affine_itk",
    "load_displacement_nifti",
    "save_affine_itk",
    "save_displacement_nifti",
]

NIFTI_INTENT_DISPVECT = 1006  # displacement vectors, RAS mm (NIfTI standard, ITK >= 5.4)
NIFTI_INTENT_VECTOR = 1007  # what ITK and ANTs write for a displacement field, LPS mm
_INTENTS = {"itk": NIFTI_INTENT_VECTOR, "ras": NIFTI_INTENT_DISPVECT}
_ITK_HEADER = "#Insight Transform File V1.0"
_ITK_AFFINE = re.compile(r"^(AffineTransform|MatrixOffsetTransformBase)_(double|float)_([23])_\3$")
_AFFINE_ATOL_MM = 1e-3  # headers store float32: a grid matches when its affine agrees to 1 µm


# ----------------------------------------------------------------------------- checks
def _check_image(image: object, name: str) -> Image:
    if not isinstance(image, Image):
        raise TypeError(
            f"{name}: expected a deepreg_core.image.Image, got {type(image).__name__}. "
            "Build one with Image.from_array(data, spacing=...) or deepreg_core.io.read_image."
        )
    return image


def _check_pair(fixed: object, moving: object | None) -> tuple[Image, Image | None]:
    fixed = _check_image(fixed, "fixed")
    if moving is None:
        return fixed, None
    moving = _check_image(moving, "moving")
    if moving.ndim != fixed.ndim:
        raise ValueError(
            f"moving: expected a {fixed.ndim}D image like fixed, got {moving.ndim}D "
            f"(shape {moving.shape})."
        )
    return fixed, moving


def _as_float_array(x: object, name: str) -> tuple[np.ndarray, np.dtype]:
    """Return ``x`` as float64 numpy and the float dtype to hand results back in."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}.")
        out = np.dtype(np.float64) if x.dtype == torch.float64 else np.dtype(np.float32)
        return x.detach().to("cpu", torch.float64).numpy(), out
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(
                f"{name}: expected a floating-point array, got dtype {x.dtype}. "
                "Cast it with .astype(np.float32) first."
            )
        out = np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)
        return x.astype(np.float64), out
    raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}.")


def _check_finite(array: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(array)):
        n_bad = int((~np.isfinite(array)).sum())
        raise ValueError(
            f"{name}: expected finite values, got {n_bad} NaN or infinite value(s) out of "
            f"{array.size}."
        )


def _as_field(
    u: object, fixed: Image, name: str, vectors_last: bool = False
) -> tuple[np.ndarray, np.dtype]:
    """``u`` as float64 ``(ndim, *S)`` (``(*S, ndim)`` if vectors last); unwraps a torch batch."""
    array, out = _as_float_array(u, name)
    shape = fixed.shape
    expected = (*shape, fixed.ndim) if vectors_last else (fixed.ndim, *shape)
    if isinstance(u, torch.Tensor) and array.ndim == len(expected) + 1 and array.shape[0] == 1:
        array = array[0]
    if array.shape != expected:
        raise ValueError(
            f"{name}: expected shape {expected} for the fixed image of shape {shape} (a torch "
            f"tensor may add a batch axis of 1), got {tuple(np.shape(u))}. The field must live "
            "on the fixed image's grid, one vector component per array axis."
        )
    _check_finite(array, name)
    return array, out


def _as_matrix(matrix: object, ndim: int, name: str) -> np.ndarray:
    """``matrix`` as a finite homogeneous float64 ``(ndim + 1, ndim + 1)`` matrix."""
    array, _ = _as_float_array(matrix, name)
    size = ndim + 1
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.shape != (size, size):
        raise ValueError(
            f"{name}: expected a homogeneous matrix of shape ({size}, {size}) for {ndim}D images "
            f"(or a batch of one, (1, {size}, {size})), got {tuple(np.shape(matrix))}."
        )
    _check_finite(array, name)
    if not np.allclose(array[-1], np.eye(size)[-1]):
        raise ValueError(
            f"{name}: expected the last row {np.eye(size)[-1].tolist()}, got {array[-1].tolist()}."
        )
    return array


# ----------------------------------------------------------------------------- files
def _nifti_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: expected a .nii or .nii.gz file name, got suffix {path.suffix!r}.")


def _lps_flip(ndim: int) -> np.ndarray:
    """``diag(-1, -1[, 1])``: RAS <-> LPS for vectors (its own inverse)."""
    return np.diag([-1.0, -1.0, 1.0][:ndim])


def _nifti_affine(image: Image) -> np.ndarray:
    """The 4x4 header affine of ``image`` (a 2D slice keeps its stored x-y-plane geometry)."""
    if image.ndim == 3:
        return np.array(image.affine)
    stored = image.meta.get("nifti_affine_3d")
    if stored is not None:
        stored = np.asarray(stored, dtype=np.float64)
        in_plane = stored[np.ix_([0, 1, 3], [0, 1, 3])]
        if np.allclose(in_plane, image.affine) and np.allclose(stored[2, :2], 0.0):
            return stored
    affine = np.eye(4)
    affine[np.ix_([0, 1, 3], [0, 1, 3])] = image.affine
    return affine


# ----------------------------------------------------------------------------- fields
def displacement_to_world(
    u_vox: np.ndarray | torch.Tensor, fixed: Image, moving: Image | None = None
) -> np.ndarray:
    """Convert a voxel displacement field to world displacement vectors (mm).

    Parameters
    ----------
    u_vox : np.ndarray or torch.Tensor
        Shape ``(ndim, *fixed.shape)`` (torch also ``(1, ndim, *fixed.shape)``), fixed voxels,
        array order: fixed voxel ``x`` maps to moving voxel ``x + u(x)``.
    fixed : Image
        The image whose grid the field lives on; ``F = fixed.affine``.
    moving : Image, optional
        The moving image, ``M = moving.affine``. ``None`` (default): the moving image was
        resampled onto the fixed grid (as in ``RegistrationResult.displacement``), ``M = F``.

    Returns
    -------
    np.ndarray
        Shape ``(*fixed.shape, ndim)``, vectors last: ``M [x + u; 1] - F [x; 1]`` in world units
        (RAS+ mm for NIfTI). float64 for a float64 input, else float32.

    Examples
    --------
    >>> import numpy as np
    >>> fixed = Image.from_array(np.zeros((4, 5, 6)), spacing=(2.0, 1.0, 3.0))
    >>> u = np.zeros((3, 4, 5, 6)); u[0] = 1.0
    >>> displacement_to_world(u, fixed)[0, 0, 0].tolist()
    [2.0, 0.0, 0.0]
    """
    fixed, moving = _check_pair(fixed, moving)
    n = fixed.ndim
    u, out = _as_field(u_vox, fixed, "u_vox")
    target = fixed.affine if moving is None else moving.affine
    world = np.einsum("ij,j...->...i", target[:n, :n], u)
    if moving is not None:
        world += _grid_offset(fixed, moving)
    return world.astype(out, copy=False)


def displacement_from_world(
    u_world: np.ndarray | torch.Tensor, fixed: Image, moving: Image | None = None
) -> np.ndarray:
    """Convert world displacement vectors back to a voxel field (the inverse of ``_to_world``).

    Parameters
    ----------
    u_world : np.ndarray or torch.Tensor
        Shape ``(*fixed.shape, ndim)``, world units (RAS+ mm for NIfTI), vectors last.
    fixed, moving : Image
        As in :func:`displacement_to_world`.

    Returns
    -------
    np.ndarray
        Shape ``(ndim, *fixed.shape)`` in fixed voxels (array order), ``u`` with
        ``M [x + u; 1] = F [x; 1] + w``. float64 for a float64 input, else float32.

    Examples
    --------
    >>> import numpy as np
    >>> fixed = Image.from_array(np.zeros((4, 5)), spacing=(2.0, 0.5))
    >>> displacement_from_world(np.full((4, 5, 2), 1.0), fixed)[:, 0, 0].tolist()
    [0.5, 2.0]
    """
    fixed, moving = _check_pair(fixed, moving)
    n = fixed.ndim
    world, out = _as_field(u_world, fixed, "u_world", vectors_last=True)
    if moving is not None:
        world = world - _grid_offset(fixed, moving)
    target = fixed.affine if moving is None else moving.affine
    u = np.einsum("ij,...j->i...", np.linalg.inv(target[:n, :n]), world)
    return u.astype(out, copy=False)


def _grid_offset(fixed: Image, moving: Image) -> np.ndarray | float:
    """``M [x; 1] - F [x; 1]`` at every fixed voxel, shape ``(*fixed.shape, ndim)`` (or 0.0)."""
    n = fixed.ndim
    difference = moving.affine - fixed.affine
    if not np.any(difference):
        return 0.0
    grid = np.indices(fixed.shape, dtype=np.float64)
    return np.einsum("ij,j...->...i", difference[:n, :n], grid) + difference[:n, n]


def save_displacement_nifti(
    u_vox: np.ndarray | torch.Tensor,
    fixed: Image,
    path: str | os.PathLike[str],
    *,
    moving: Image | None = None,
    convention: str = "itk",
) -> Path:
    """Write a displacement field as an ITK/ANTs NIfTI (atomic write).

    Parameters
    ----------
    u_vox : np.ndarray or torch.Tensor
        Shape ``(ndim, *fixed.shape)`` (torch also ``(1, ndim, *fixed.shape)``), fixed voxels.
    fixed : Image
        The field's grid; its affine becomes the header affine (qform and sform, code 1).
    path : str or PathLike
        ``.nii`` or ``.nii.gz``. An existing file is replaced only once the new one is complete.
    moving : Image, optional
        See :func:`displacement_to_world`; ``None`` means ``M = F``.
    convention : {"itk", "ras"}
        ``"itk"`` (default): vectors in LPS mm (the first two RAS components change sign), intent
        1007, as ANTs, ITK and SimpleITK write and read them. ``"ras"``: vectors in RAS mm,
        intent 1006 (``NIFTI_INTENT_DISPVECT``); ITK >= 5.4 reads it too, but only in 3D.

    Returns
    -------
    Path
        The written file. Data float32, shape ``(X, Y, Z, 1, 3)`` in 3D, ``(X, Y, 1, 1, 2)`` in
        2D, units mm.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> fixed = Image.from_array(np.zeros((4, 5, 6)), spacing=(2.0, 1.0, 3.0))
    >>> out = save_displacement_nifti(np.zeros((3, 4, 5, 6), np.float32), fixed,
    ...                               os.path.join(tempfile.mkdtemp(), "warp.nii.gz"))
    >>> nib.load(out).shape
    (4, 5, 6, 1, 3)
    """
    if convention not in _INTENTS:
        raise ValueError(f"convention: expected one of {tuple(_INTENTS)}, got {convention!r}.")
    path = Path(path)
    suffix = _nifti_suffix(path)
    world = displacement_to_world(u_vox, fixed, moving).astype(np.float32)
    if convention == "itk":
        world[..., :2] *= -1.0
    data = world.reshape(*fixed.shape, *(1,) * (4 - fixed.ndim), fixed.ndim)
    affine = _nifti_affine(fixed)
    nifti = nib.Nifti1Image(data, affine)
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    header = nifti.header
    header.set_intent(_INTENTS[convention])
    header.set_xyzt_units(xyz="mm")
    header["descrip"] = f"displacement field, {'LPS' if convention == 'itk' else 'RAS'} mm"
    with atomic_target(path, suffix) as temporary:
        nib.save(nifti, temporary)
    return path


def load_displacement_nifti(
    path: str | os.PathLike[str],
    reference: Image | None = None,
    *,
    moving: Image | None = None,
    convention: str = "auto",
) -> tuple[np.ndarray, Image]:
    """Read an ITK/ANTs displacement field NIfTI back into fixed voxels.

    Parameters
    ----------
    path : str or PathLike
        A NIfTI of shape ``(X, Y, Z, 1, 3)`` or ``(X, Y, 1, 1, 2)`` (as ANTs, ITK and
        :func:`save_displacement_nifti` write), vectors in mm.
    reference : Image, optional
        The fixed image the field was computed on. Its grid must match the file's (shape, and
        affine to 1e-3 mm); it is then returned as the grid and its exact affine is used.
    moving : Image, optional
        The moving image the field points into (see :func:`displacement_to_world`); ``None``
        means the moving image is taken on the fixed grid (``M = F``).
    convention : {"auto", "itk", "ras"}
        How the vectors are stored: LPS mm (``"itk"``) or RAS mm (``"ras"``). ``"auto"``
        (default): RAS for intent 1006 (``NIFTI_INTENT_DISPVECT``), LPS otherwise (ITK and ANTs
        write intent 1007).

    Returns
    -------
    u_vox : np.ndarray
        Shape ``(ndim, *S)``, float32, fixed voxels in array order.
    grid : Image
        ``reference`` when given; otherwise an image on the file's grid whose data is the
        displacement magnitude in mm, shape ``S``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> fixed = Image.from_array(np.zeros((4, 5)), spacing=(2.0, 0.5))
    >>> u = np.ones((2, 4, 5), np.float32)
    >>> out = save_displacement_nifti(u, fixed, os.path.join(tempfile.mkdtemp(), "w.nii"))
    >>> u_back, grid = load_displacement_nifti(out)
    >>> bool(np.allclose(u_back, u, atol=1e-5)), grid.spacing
    (True, (2.0, 0.5))
    """
    if convention not in ("auto", *_INTENTS):
        raise ValueError(f"convention: expected one of {('auto', *_INTENTS)}, got {convention!r}.")
    path = Path(path)
    nifti = nib.load(path, mmap=False)
    if convention == "auto":
        dispvect = int(nifti.header["intent_code"]) == NIFTI_INTENT_DISPVECT
        convention = "ras" if dispvect else "itk"
    shape = tuple(nifti.shape)
    ndim = shape[-1] if len(shape) == 5 else 0
    if ndim not in (2, 3) or shape[3] != 1 or (ndim == 2 and shape[2] != 1):
        raise ValueError(
            f"{path}: expected an ITK displacement field of shape (X, Y, Z, 1, 3) or "
            f"(X, Y, 1, 1, 2), got {shape}. Is this an image rather than a field?"
        )
    spatial = shape[:ndim]
    world = np.asarray(nifti.dataobj, dtype=np.float64).reshape(*spatial, ndim)
    _check_finite(world, str(path))
    affine = np.asarray(nifti.affine, dtype=np.float64)
    if ndim == 2:
        if not np.allclose(affine[2, :2], 0.0, atol=1e-6):
            raise ValueError(
                f"{path}: a 2D field must lie in the world x-y plane, but its axes have z "
                f"components {affine[2, :2].tolist()}."
            )
        affine = affine[np.ix_([0, 1, 3], [0, 1, 3])]
    if convention == "itk":
        world[..., :2] *= -1.0
    if reference is not None:
        grid = _check_image(reference, "reference")
        if grid.shape != spatial or not np.allclose(grid.affine, affine, atol=_AFFINE_ATOL_MM):
            raise ValueError(
                f"reference: expected the grid of {path.name} (shape {spatial}, affine\n"
                f"{np.round(affine, 4)}), got shape {grid.shape}, affine\n"
                f"{np.round(grid.affine, 4)}. Pass the fixed image the field was computed on."
            )
    else:
        magnitude = np.linalg.norm(world, axis=-1).astype(np.float32)
        grid = Image(magnitude, affine, {"source": str(path), "unit": "mm"})
    return displacement_from_world(world, grid, moving).astype(np.float32), grid


# ----------------------------------------------------------------------------- affines
def affine_to_world(
    matrix_vox: np.ndarray | torch.Tensor, fixed: Image, moving: Image
) -> np.ndarray:
    """Convert a voxel affine (fixed index → moving index) to a world affine.

    Parameters
    ----------
    matrix_vox : np.ndarray or torch.Tensor
        Shape ``(ndim + 1, ndim + 1)`` (or ``(1, ndim + 1, ndim + 1)``), homogeneous.
    fixed, moving : Image
        Give ``F = fixed.affine`` and ``M = moving.affine``.

    Returns
    -------
    np.ndarray
        ``M @ A @ inv(F)``, float64 ``(ndim + 1, ndim + 1)``: fixed world point → moving world
        point (RAS+ mm for NIfTI).

    Examples
    --------
    >>> import numpy as np
    >>> img = Image.from_array(np.zeros((4, 4)), spacing=(2.0, 3.0))
    >>> shift = np.array([[1.0, 0, 1], [0, 1, 0], [0, 0, 1]])
    >>> affine_to_world(shift, img, img)[:2, 2].tolist()
    [2.0, 0.0]
    """
    fixed, moving = _check_pair(fixed, moving)
    if moving is None:
        raise TypeError("moving: expected an Image, got None.")
    matrix = _as_matrix(matrix_vox, fixed.ndim, "matrix_vox")
    return moving.affine @ matrix @ np.linalg.inv(fixed.affine)


def affine_from_world(
    matrix_world: np.ndarray | torch.Tensor, fixed: Image, moving: Image
) -> np.ndarray:
    """Convert a world affine (fixed world → moving world) to voxels: ``inv(M) @ W @ F``.

    Parameters
    ----------
    matrix_world : np.ndarray or torch.Tensor
        Shape ``(ndim + 1, ndim + 1)``, e.g. from :func:`load_affine_itk`.
    fixed, moving : Image
        Give ``F = fixed.affine`` and ``M = moving.affine``.

    Returns
    -------
    np.ndarray
        float64 ``(ndim + 1, ndim + 1)``, fixed voxel index → moving voxel index.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image.from_array(np.zeros((4, 4)), spacing=(2.0, 3.0))
    >>> affine_from_world(np.eye(3), img, img).tolist() == np.eye(3).tolist()
    True
    """
    fixed, moving = _check_pair(fixed, moving)
    if moving is None:
        raise TypeError("moving: expected an Image, got None.")
    matrix = _as_matrix(matrix_world, fixed.ndim, "matrix_world")
    return np.linalg.inv(moving.affine) @ matrix @ fixed.affine


def save_affine_itk(
    matrix_vox: np.ndarray | torch.Tensor,
    fixed: Image,
    moving: Image,
    path: str | os.PathLike[str],
) -> Path:
    """Write a voxel affine as an ITK text transform file (atomic write).

    Parameters
    ----------
    matrix_vox : np.ndarray or torch.Tensor
        Shape ``(ndim + 1, ndim + 1)``, fixed voxel index → moving voxel index.
    fixed, moving : Image
        The images it registers (their affines give the world).
    path : str or PathLike
        ``.tfm`` or ``.txt``. An existing file is replaced only once the new one is complete.

    Returns
    -------
    Path
        The file: ``AffineTransform_double_3_3`` (or ``_2_2``), ``Parameters:`` the LPS linear
        part row by row then the translation, ``FixedParameters:`` the centre, 0. It maps fixed
        LPS points to moving LPS points (``antsApplyTransforms -t file.tfm``).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> img = Image.from_array(np.zeros((4, 4)))
    >>> out = save_affine_itk(np.eye(3), img, img, os.path.join(tempfile.mkdtemp(), "a.tfm"))
    >>> out.read_text().splitlines()[2]
    'Transform: AffineTransform_double_2_2'
    """
    world = affine_to_world(matrix_vox, fixed, moving)
    path = Path(path)
    if path.suffix.lower() not in (".tfm", ".txt"):
        raise ValueError(
            f"{path}: expected a .tfm or .txt file name (ITK text transform), got suffix "
            f"{path.suffix!r}."
        )
    n = fixed.ndim
    flip = np.eye(n + 1)
    flip[:n, :n] = _lps_flip(n)
    lps = flip @ world @ flip
    parameters = [*lps[:n, :n].ravel(), *lps[:n, n]]
    lines = [
        _ITK_HEADER,
        "#Transform 0",
        f"Transform: AffineTransform_double_{n}_{n}",
        "Parameters: " + " ".join(repr(float(p) + 0.0) for p in parameters),
        "FixedParameters: " + " ".join(["0"] * n),
        "",
    ]
    with atomic_target(path, path.suffix) as temporary:
        temporary.write_text("\n".join(lines), encoding="ascii")
    return path


def load_affine_itk(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one ITK/ANTs affine transform as a world RAS matrix.

    Parameters
    ----------
    path : str or PathLike
        An ITK text file (``.tfm``/``.txt``) or an ANTs/ITK MATLAB file (``.mat``) holding one
        ``AffineTransform`` or ``MatrixOffsetTransformBase`` (double or float, 2D or 3D). A centre
        (``FixedParameters``) other than 0 is folded into the translation.

    Returns
    -------
    np.ndarray
        float64 ``(ndim + 1, ndim + 1)``: fixed world RAS point → moving world RAS point. Use
        :func:`affine_from_world` to get our voxel matrix.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> img = Image.from_array(np.zeros((4, 4)))
    >>> out = save_affine_itk(np.eye(3), img, img, os.path.join(tempfile.mkdtemp(), "a.tfm"))
    >>> load_affine_itk(out).tolist() == np.eye(3).tolist()
    True
    """
    path = Path(path)
    if path.suffix.lower() == ".mat":
        name, parameters, centre = _read_itk_mat(path)
    else:
        name, parameters, centre = _read_itk_text(path)
    n = _itk_ndim(name)
    if parameters.size != n * n + n or centre.size != n:
        raise ValueError(
            f"{path}: {name} expects {n * n + n} parameters and {n} fixed parameters, got "
            f"{parameters.size} and {centre.size}."
        )
    _check_finite(parameters, f"{path}: Parameters")
    _check_finite(centre, f"{path}: FixedParameters")
    linear = parameters[: n * n].reshape(n, n)
    lps = np.eye(n + 1)
    lps[:n, :n] = linear
    lps[:n, n] = parameters[n * n :] + centre - linear @ centre
    flip = np.eye(n + 1)
    flip[:n, :n] = _lps_flip(n)
    return flip @ lps @ flip


def _itk_ndim(name: str) -> int:
    match = _ITK_AFFINE.match(name)
    if match is None:
        raise ValueError(f"expected an AffineTransform_double_N_N name, got {name!r}.")
    return int(match.group(3))


def _read_itk_text(path: Path) -> tuple[str, np.ndarray, np.ndarray]:
    lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    if not lines or not lines[0].startswith("#Insight Transform File"):
        raise ValueError(f"{path}: expected an ITK text transform starting with {_ITK_HEADER!r}.")
    blocks: list[dict[str, str]] = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}, line {number}: expected 'Key: values', got {line!r}.")
        if key.strip() == "Transform":
            blocks.append({"name": value.strip()})
        elif blocks:
            blocks[-1][key.strip()] = value
    blocks = [b for b in blocks if not b["name"].startswith("CompositeTransform")]
    names = [b["name"] for b in blocks]
    if len(blocks) != 1 or not _ITK_AFFINE.match(names[0]):
        raise ValueError(
            f"{path}: expected exactly one AffineTransform_double_N_N (or "
            f"MatrixOffsetTransformBase), got {names or 'no transform'}. Only affine files are "
            "read; apply nonlinear ANTs transforms with ANTs or load the warp as a NIfTI field."
        )
    try:
        parameters = np.array(blocks[0].get("Parameters", "").split(), dtype=np.float64)
        centre = np.array(blocks[0].get("FixedParameters", "").split(), dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{path}: expected numbers after Parameters:, got {error}.") from error
    return names[0], parameters, centre


def _read_itk_mat(path: Path) -> tuple[str, np.ndarray, np.ndarray]:
    contents = scipy.io.loadmat(path)
    names = [key for key in contents if _ITK_AFFINE.match(key)]
    if len(names) != 1:
        keys = [key for key in contents if not key.startswith("__")]
        raise ValueError(
            f"{path}: expected one AffineTransform_double_N_N variable (ANTs .mat), got {keys}."
        )
    parameters = np.asarray(contents[names[0]], dtype=np.float64).ravel()
    centre = np.asarray(contents.get("fixed", np.zeros(0)), dtype=np.float64).ravel()
    return names[0], parameters, centre
