"""Export/import of transforms (``deepreg_core.interop``) against known geometry.

The optional checks at the end read our files with SimpleITK and nitransforms (skipped when those
are not installed; neither is a dependency).
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import scipy.io
import torch
from scipy.spatial.transform import Rotation

from deepreg_core import interop
from deepreg_core.image import Image

RNG_SEED = 0
LPS = np.diag([-1.0, -1.0, 1.0])


def oblique_image(shape: tuple[int, ...], spacing, origin, angles) -> Image:
    """An image whose axes are rotated by ``angles`` (degrees) and scaled by ``spacing``."""
    if len(shape) == 3:
        direction = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    else:
        direction = Rotation.from_euler("z", angles[0], degrees=True).as_matrix()[:2, :2]
    return Image.from_array(
        np.zeros(shape, np.float32), spacing=spacing, origin=origin, direction=direction
    )


@pytest.fixture
def fixed3() -> Image:
    return oblique_image((6, 7, 8), (2.0, 1.0, 3.0), (5.0, -3.0, 7.0), (10.0, -20.0, 30.0))


@pytest.fixture
def moving3() -> Image:
    return oblique_image((9, 5, 6), (1.5, 2.0, 0.7), (-2.0, 4.0, 1.0), (-5.0, 15.0, 3.0))


@pytest.fixture
def fixed2() -> Image:
    return oblique_image((6, 7), (2.0, 0.5), (1.0, -4.0), (25.0,))


def random_field(image: Image, scale: float = 1.5) -> np.ndarray:
    rng = np.random.default_rng(RNG_SEED)
    return rng.normal(scale=scale, size=(image.ndim, *image.shape)).astype(np.float32)


def random_affine(ndim: int) -> np.ndarray:
    rng = np.random.default_rng(RNG_SEED + 1)
    matrix = np.eye(ndim + 1)
    matrix[:ndim, :ndim] += rng.normal(scale=0.1, size=(ndim, ndim))
    matrix[:ndim, ndim] = rng.normal(scale=2.0, size=ndim)
    return matrix


def world_of(image: Image, index: np.ndarray) -> np.ndarray:
    return image.affine[:-1, :-1] @ index + image.affine[:-1, -1]


# ----------------------------------------------------------------------------- displacement
def test_constant_shift_becomes_direction_spacing_shift(fixed3):
    shift = np.array([1.0, -2.0, 0.5])
    u = np.broadcast_to(shift[:, None, None, None], (3, *fixed3.shape)).astype(np.float32)
    world = interop.displacement_to_world(u, fixed3)
    expected = fixed3.direction @ np.diag(fixed3.spacing) @ shift
    assert world.shape == (*fixed3.shape, 3)
    np.testing.assert_allclose(world, np.broadcast_to(expected, world.shape), atol=1e-5)


def test_world_displacement_with_a_moving_image_maps_points(fixed3, moving3):
    u = random_field(fixed3)
    world = interop.displacement_to_world(u, fixed3, moving3)
    for index in [(0, 0, 0), (5, 6, 7), (2, 3, 1)]:
        x = np.array(index, dtype=np.float64)
        mapped = world_of(moving3, x + u[(slice(None), *index)])
        np.testing.assert_allclose(world[index], mapped - world_of(fixed3, x), atol=1e-4)


def test_zero_field_between_scaled_grids_is_the_grid_difference():
    fixed = Image.from_array(np.zeros((4, 5)))
    moving = Image.from_array(np.zeros((4, 5)), spacing=(2.0, 2.0), origin=(1.0, -1.0))
    world = interop.displacement_to_world(np.zeros((2, 4, 5)), fixed, moving)
    grid = np.moveaxis(np.indices((4, 5)), 0, -1)
    np.testing.assert_allclose(world, grid + np.array([1.0, -1.0]))


def test_torch_field_with_batch_axis_and_dtype(fixed2):
    u = random_field(fixed2)
    from_torch = interop.displacement_to_world(torch.from_numpy(u)[None], fixed2)
    from_numpy = interop.displacement_to_world(u, fixed2)
    assert from_torch.dtype == np.float32
    assert interop.displacement_to_world(u.astype(np.float64), fixed2).dtype == np.float64
    np.testing.assert_allclose(from_torch, from_numpy)


def test_world_round_trip_through_displacement_from_world(fixed3, moving3):
    u = random_field(fixed3).astype(np.float64)
    world = interop.displacement_to_world(u, fixed3, moving3)
    back = interop.displacement_from_world(world, fixed3, moving3)
    np.testing.assert_allclose(back, u, atol=1e-9)


@pytest.mark.parametrize("name", ["fixed3", "fixed2"])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_round_trip(tmp_path, request, name, suffix):
    fixed = request.getfixturevalue(name)
    u = random_field(fixed)
    path = interop.save_displacement_nifti(u, fixed, tmp_path / f"warp{suffix}")
    back, grid = interop.load_displacement_nifti(path)
    np.testing.assert_allclose(back, u, atol=1e-5)
    np.testing.assert_allclose(grid.affine, fixed.affine, atol=1e-5)
    magnitude = np.linalg.norm(interop.displacement_to_world(u, fixed), axis=-1)
    np.testing.assert_allclose(grid.data, magnitude, atol=1e-4)
    back_ref, same = interop.load_displacement_nifti(path, reference=fixed)
    assert same is fixed
    np.testing.assert_allclose(back_ref, u, atol=1e-5)


def test_nifti_round_trip_with_moving_image_and_ras(tmp_path, fixed3, moving3):
    u = random_field(fixed3)
    path = tmp_path / "warp.nii.gz"
    interop.save_displacement_nifti(u, fixed3, path, moving=moving3, convention="ras")
    assert int(nib.load(path).header["intent_code"]) == interop.NIFTI_INTENT_DISPVECT
    back, _ = interop.load_displacement_nifti(path, fixed3, moving=moving3)  # auto: RAS
    np.testing.assert_allclose(back, u, atol=1e-5)


@pytest.mark.parametrize("name", ["fixed3", "fixed2"])
def test_nifti_header_layout(tmp_path, request, name):
    fixed = request.getfixturevalue(name)
    path = interop.save_displacement_nifti(random_field(fixed), fixed, tmp_path / "w.nii.gz")
    nifti = nib.load(path)
    ndim = fixed.ndim
    expected_shape = (*fixed.shape, 1, 3) if ndim == 3 else (*fixed.shape, 1, 1, 2)
    assert nifti.shape == expected_shape
    assert int(nifti.header["intent_code"]) == interop.NIFTI_INTENT_VECTOR
    assert nifti.get_data_dtype() == np.float32
    assert nifti.header.get_xyzt_units()[0] == "mm"
    expected_affine = np.eye(4)
    index = [0, 1, 2, 3] if ndim == 3 else [0, 1, 3]
    expected_affine[np.ix_(index, index)] = fixed.affine
    np.testing.assert_allclose(nifti.affine, expected_affine, atol=1e-5)
    assert int(nifti.header["sform_code"]) == 1 and int(nifti.header["qform_code"]) == 1


def test_itk_convention_stores_lps_signs(tmp_path):
    fixed = Image.from_array(np.zeros((3, 4, 5)), spacing=(2.0, 1.0, 1.0))  # RAS-aligned axes
    u = np.zeros((3, 3, 4, 5), np.float32)
    u[0], u[1], u[2] = 1.0, 2.0, 3.0  # +R 2 mm, +A 2 mm, +S 3 mm
    path = interop.save_displacement_nifti(u, fixed, tmp_path / "w.nii")
    stored = np.asarray(nib.load(path).dataobj)
    np.testing.assert_allclose(stored[1, 2, 3, 0], [-2.0, -2.0, 3.0])
    ras = interop.save_displacement_nifti(u, fixed, tmp_path / "r.nii", convention="ras")
    np.testing.assert_allclose(np.asarray(nib.load(ras).dataobj)[1, 2, 3, 0], [2.0, 2.0, 3.0])


def test_2d_slice_keeps_its_stored_3d_geometry(tmp_path):
    stored = np.eye(4)
    stored[:3, 3] = [1.0, 2.0, 40.0]  # an axial slice at z = 40 mm
    fixed = Image(
        np.zeros((5, 6)), stored[np.ix_([0, 1, 3], [0, 1, 3])], {"nifti_affine_3d": stored}
    )
    path = interop.save_displacement_nifti(random_field(fixed), fixed, tmp_path / "w.nii")
    np.testing.assert_allclose(nib.load(path).affine, stored)


# ----------------------------------------------------------------------------- affines
def test_identity_voxel_affine_with_equal_grids_is_identity_in_world(fixed3):
    np.testing.assert_allclose(
        interop.affine_to_world(np.eye(4), fixed3, fixed3), np.eye(4), atol=1e-12
    )


def test_world_affine_maps_world_points(fixed3, moving3):
    matrix = random_affine(3)
    world = interop.affine_to_world(torch.from_numpy(matrix), fixed3, moving3)
    x = np.array([1.0, 2.0, 3.0])
    mapped = world[:3, :3] @ world_of(fixed3, x) + world[:3, 3]
    np.testing.assert_allclose(mapped, world_of(moving3, matrix[:3, :3] @ x + matrix[:3, 3]))
    np.testing.assert_allclose(
        interop.affine_from_world(world, fixed3, moving3), matrix, atol=1e-12
    )


@pytest.mark.parametrize("ndim", [2, 3])
def test_itk_affine_round_trip(tmp_path, request, moving3, ndim):
    fixed = request.getfixturevalue(f"fixed{ndim}")
    moving = moving3 if ndim == 3 else oblique_image((5, 5), (1.0, 3.0), (0.0, 2.0), (-10.0,))
    matrix = random_affine(ndim)
    path = interop.save_affine_itk(matrix, fixed, moving, tmp_path / "affine.tfm")
    lines = path.read_text().splitlines()
    assert lines[0] == "#Insight Transform File V1.0"
    assert lines[2] == f"Transform: AffineTransform_double_{ndim}_{ndim}"
    assert len(lines[3].split()) == 1 + ndim * ndim + ndim
    assert lines[4] == "FixedParameters: " + " ".join(["0"] * ndim)
    world = interop.load_affine_itk(path)
    np.testing.assert_allclose(world, interop.affine_to_world(matrix, fixed, moving), atol=1e-12)
    np.testing.assert_allclose(interop.affine_from_world(world, fixed, moving), matrix, atol=1e-10)


def test_itk_parameters_are_lps(tmp_path):
    image = Image.from_array(np.zeros((4, 4, 4)))
    shift = np.eye(4)
    shift[:3, 3] = [1.0, 2.0, 3.0]  # +1 mm R, +2 mm A, +3 mm S
    text = interop.save_affine_itk(shift, image, image, tmp_path / "a.txt").read_text()
    assert "Parameters: 1.0 0.0 0.0 0.0 1.0 0.0 0.0 0.0 1.0 -1.0 -2.0 3.0" in text


def test_itk_centre_is_folded_into_the_translation(tmp_path):
    # ITK: y = A (x - c) + t + c. A 90 degree rotation about c = (1, 1) (LPS) keeps c fixed.
    path = tmp_path / "rot.tfm"
    path.write_text(
        "#Insight Transform File V1.0\n#Transform 0\n"
        "Transform: MatrixOffsetTransformBase_double_2_2\n"
        "Parameters: 0 -1 1 0 0 0\nFixedParameters: 1 1\n"
    )
    world = interop.load_affine_itk(path)
    centre_ras = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(world @ centre_ras, centre_ras, atol=1e-12)
    np.testing.assert_allclose(world[:2, :2], [[0.0, -1.0], [1.0, 0.0]])


def test_ants_mat_file(tmp_path):
    # ANTs/ITK binary layout: AffineTransform_double_3_3 (12 x 1) and fixed (3 x 1), MATLAB v4.
    linear = np.array([[1.0, 0.1, 0.0], [0.0, 0.9, 0.0], [0.0, 0.0, 1.2]])
    translation, centre = np.array([1.0, -2.0, 3.0]), np.array([0.5, 0.5, 0.5])
    scipy.io.savemat(
        tmp_path / "a.mat",
        {
            "AffineTransform_double_3_3": np.r_[linear.ravel(), translation][:, None],
            "fixed": centre[:, None],
        },
        format="4",
    )
    world = interop.load_affine_itk(tmp_path / "a.mat")
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = linear, translation + centre - linear @ centre
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    np.testing.assert_allclose(world, flip @ lps @ flip)


# ----------------------------------------------------------------------------- errors
def test_field_shape_must_match_the_image(fixed3, fixed2):
    with pytest.raises(ValueError, match=r"expected shape \(3, 6, 7, 8\).*got \(3, 6, 7, 9\)"):
        interop.displacement_to_world(np.zeros((3, 6, 7, 9), np.float32), fixed3)
    with pytest.raises(ValueError, match=r"expected shape \(2, 6, 7\).*got \(3, 6, 7\)"):
        interop.displacement_to_world(np.zeros((3, 6, 7), np.float32), fixed2)
    with pytest.raises(ValueError, match=r"expected shape \(2, 6, 7\).*got \(2, 2, 6, 7\)"):
        interop.displacement_to_world(torch.zeros(2, 2, 6, 7), fixed2)
    with pytest.raises(ValueError, match=r"expected shape \(6, 7, 2\)"):
        interop.displacement_from_world(np.zeros((2, 6, 7)), fixed2)
    with pytest.raises(ValueError, match=r"expected shape"):
        interop.displacement_to_world(np.zeros((0,), np.float32), fixed2)


def test_field_values_and_types(fixed2, fixed3):
    u = random_field(fixed2)
    u[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="expected finite values, got 1 NaN"):
        interop.displacement_to_world(u, fixed2)
    with pytest.raises(TypeError, match="expected a floating-point array, got dtype int64"):
        interop.displacement_to_world(np.zeros((2, 6, 7), np.int64), fixed2)
    with pytest.raises(TypeError, match="expected a floating-point tensor"):
        interop.displacement_to_world(torch.zeros(1, 2, 6, 7, dtype=torch.int32), fixed2)
    with pytest.raises(TypeError, match="expected a numpy array or torch tensor, got list"):
        interop.displacement_to_world([[0.0]], fixed2)
    with pytest.raises(TypeError, match="fixed: expected a deepreg_core.image.Image"):
        interop.displacement_to_world(random_field(fixed2), np.zeros((6, 7)))
    with pytest.raises(ValueError, match="moving: expected a 2D image like fixed, got 3D"):
        interop.displacement_to_world(random_field(fixed2), fixed2, fixed3)


def test_matrix_checks(fixed3, moving3):
    with pytest.raises(
        ValueError,
        match=r"expected a homogeneous matrix of shape \(4, 4\).*"
        r"got \(3, 3\)",
    ):
        interop.affine_to_world(np.eye(3), fixed3, moving3)
    with pytest.raises(ValueError, match=r"got \(0,\)"):
        interop.affine_to_world(np.zeros(0), fixed3, moving3)
    bad = np.eye(4)
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="expected finite values"):
        interop.save_affine_itk(bad, fixed3, moving3, "never.tfm")
    bad = np.eye(4)
    bad[3, 0] = 1.0
    with pytest.raises(ValueError, match=r"expected the last row \[0.0, 0.0, 0.0, 1.0\]"):
        interop.affine_to_world(bad, fixed3, moving3)
    with pytest.raises(TypeError, match="moving: expected an Image, got None"):
        interop.affine_to_world(np.eye(4), fixed3, None)


def test_file_name_and_convention_checks(tmp_path, fixed2):
    u = random_field(fixed2)
    with pytest.raises(
        ValueError,
        match=r"expected a .nii or .nii.gz file name, got suffix "
        r"'.tif'",
    ):
        interop.save_displacement_nifti(u, fixed2, tmp_path / "w.tif")
    with pytest.raises(
        ValueError,
        match=r"convention: expected one of \('itk', 'ras'\), got "
        r"'lps'",
    ):
        interop.save_displacement_nifti(u, fixed2, tmp_path / "w.nii", convention="lps")
    with pytest.raises(ValueError, match=r"expected a .tfm or .txt file name"):
        interop.save_affine_itk(np.eye(3), fixed2, fixed2, tmp_path / "a.mat")
    with pytest.raises(FileNotFoundError, match="does not exist. Create it first"):
        interop.save_displacement_nifti(u, fixed2, tmp_path / "missing" / "w.nii")
    assert list(tmp_path.iterdir()) == []


def test_loading_bad_fields(tmp_path, fixed3, fixed2):
    image_path = tmp_path / "image.nii"
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 8), np.float32), np.eye(4)), image_path)
    with pytest.raises(
        ValueError,
        match=r"expected an ITK displacement field of shape "
        r"\(X, Y, Z, 1, 3\).*got \(6, 7, 8\)",
    ):
        interop.load_displacement_nifti(image_path)
    path = interop.save_displacement_nifti(random_field(fixed3), fixed3, tmp_path / "w.nii")
    with pytest.raises(
        ValueError,
        match=r"(?s)reference: expected the grid of w.nii \(shape "
        r"\(6, 7, 8\).*got shape \(6, 7\)",
    ):
        interop.load_displacement_nifti(path, reference=fixed2)
    shifted = Image(np.zeros(fixed3.shape), fixed3.affine + _shift(4, 1.0))
    with pytest.raises(ValueError, match="Pass the fixed image the field was computed on"):
        interop.load_displacement_nifti(path, reference=shifted)
    nan_path = tmp_path / "nan.nii"
    data = np.zeros((6, 7, 8, 1, 3), np.float32)
    data[0, 0, 0, 0, 1] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), nan_path)
    with pytest.raises(ValueError, match="expected finite values, got 1 NaN"):
        interop.load_displacement_nifti(nan_path)
    with pytest.raises(ValueError, match=r"convention: expected one of \('auto', 'itk', 'ras'\)"):
        interop.load_displacement_nifti(path, convention="lps")


def _shift(size: int, mm: float) -> np.ndarray:
    shift = np.zeros((size, size))
    shift[0, -1] = mm
    return shift


def test_loading_bad_affine_files(tmp_path):
    path = tmp_path / "bad.tfm"
    path.write_text("hello\n")
    with pytest.raises(ValueError, match="expected an ITK text transform starting with"):
        interop.load_affine_itk(path)
    header = "#Insight Transform File V1.0\n"
    path.write_text(header + "Transform: BSplineTransform_double_3_3\nParameters: 1\n")
    with pytest.raises(
        ValueError,
        match=r"expected exactly one AffineTransform.*"
        r"got \['BSplineTransform_double_3_3'\]",
    ):
        interop.load_affine_itk(path)
    two = "Transform: AffineTransform_double_2_2\nParameters: 1 0 0 1 0 0\nFixedParameters: 0 0\n"
    path.write_text(header + two + two)
    with pytest.raises(ValueError, match=r"got \['AffineTransform_double_2_2', "):
        interop.load_affine_itk(path)
    path.write_text(
        header + "Transform: AffineTransform_double_2_2\nParameters: 1 0 0 1\n"
        "FixedParameters: 0 0\n"
    )
    with pytest.raises(ValueError, match="expects 6 parameters and 2 fixed parameters, got 4"):
        interop.load_affine_itk(path)
    path.write_text(header + "Transform: AffineTransform_double_2_2\nParameters: 1 0 0 one 0 0\n")
    with pytest.raises(ValueError, match="expected numbers after Parameters"):
        interop.load_affine_itk(path)
    path.write_text(
        header + "Transform: AffineTransform_double_2_2\nParameters: 1 0 0 nan 0 0\n"
        "FixedParameters: 0 0\n"
    )
    with pytest.raises(ValueError, match="expected finite values"):
        interop.load_affine_itk(path)
    scipy.io.savemat(tmp_path / "x.mat", {"something": np.zeros((2, 1))}, format="4")
    with pytest.raises(
        ValueError,
        match=r"expected one AffineTransform_double_N_N variable.*"
        r"got \['something'\]",
    ):
        interop.load_affine_itk(tmp_path / "x.mat")


# ----------------------------------------------------------------------------- atomic writes
def _fail_fsync(monkeypatch):
    def fail(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)


def test_failed_field_write_leaves_the_old_file(tmp_path, monkeypatch, fixed2):
    path = tmp_path / "w.nii.gz"
    path.write_bytes(b"old contents")
    _fail_fsync(monkeypatch)  # fails after the temporary file is fully written
    with pytest.raises(OSError, match="disk full"):
        interop.save_displacement_nifti(random_field(fixed2), fixed2, path)
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["w.nii.gz"]


def test_failed_affine_write_leaves_no_file(tmp_path, monkeypatch, fixed3):
    path = tmp_path / "a.tfm"
    _fail_fsync(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        interop.save_affine_itk(np.eye(4), fixed3, fixed3, path)
    assert list(tmp_path.iterdir()) == []


def test_invalid_input_does_not_touch_an_existing_file(tmp_path, fixed2):
    path = tmp_path / "w.nii"
    path.write_bytes(b"old contents")
    u = random_field(fixed2)
    u[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="expected finite values"):
        interop.save_displacement_nifti(u, fixed2, path)
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["w.nii"]


# ----------------------------------------------------------------------------- other tools
def test_nitransforms_reads_our_3d_affine_and_field(tmp_path, fixed3, moving3):
    linear = pytest.importorskip("nitransforms.linear")
    nonlinear = pytest.importorskip("nitransforms.nonlinear")
    matrix = random_affine(3)
    path = interop.save_affine_itk(matrix, fixed3, moving3, tmp_path / "affine.tfm")
    read = linear.load(str(path), fmt="itk")
    np.testing.assert_allclose(
        read.matrix, interop.affine_to_world(matrix, fixed3, moving3), atol=1e-5
    )
    u = random_field(fixed3)
    field = interop.save_displacement_nifti(u, fixed3, tmp_path / "w.nii.gz", moving=moving3)
    index = np.array([2.0, 3.0, 4.0])
    mapped = nonlinear.load(str(field), fmt="itk").map(world_of(fixed3, index)[None])
    expected = world_of(moving3, index + u[:, 2, 3, 4])
    np.testing.assert_allclose(mapped[0], expected, atol=1e-4)


def test_simpleitk_reads_our_files(tmp_path, fixed3, moving3, fixed2):
    sitk = pytest.importorskip("SimpleITK")
    u = random_field(fixed3)
    itk_version = (sitk.Version.ITKMajorVersion(), sitk.Version.ITKMinorVersion())
    # ITK >= 5.4 turns the RAS vectors of a DISPVECT (1006) file into LPS itself.
    for convention in ("itk", "ras") if itk_version >= (5, 4) else ("itk",):
        path = interop.save_displacement_nifti(
            u, fixed3, tmp_path / f"{convention}.nii.gz", moving=moving3, convention=convention
        )
        image = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkVectorFloat64)
        transform = sitk.DisplacementFieldTransform(image)
        for index in [(0, 0, 0), (5, 6, 7), (2, 3, 4)]:
            x = np.array(index, dtype=np.float64)
            mapped = transform.TransformPoint(tuple(LPS @ world_of(fixed3, x)))
            expected = LPS @ world_of(moving3, x + u[(slice(None), *index)])
            np.testing.assert_allclose(mapped, expected, atol=1e-4)
    matrix = random_affine(3)
    path = interop.save_affine_itk(matrix, fixed3, moving3, tmp_path / "a.tfm")
    x = np.array([1.0, 2.0, 3.0])
    mapped = sitk.ReadTransform(str(path)).TransformPoint(tuple(LPS @ world_of(fixed3, x)))
    expected = LPS @ world_of(moving3, matrix[:3, :3] @ x + matrix[:3, 3])
    np.testing.assert_allclose(mapped, expected, atol=1e-9)
    u2 = random_field(fixed2)
    path = interop.save_displacement_nifti(u2, fixed2, tmp_path / "w2.nii")
    transform = sitk.DisplacementFieldTransform(
        sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkVectorFloat64)
    )
    x = np.array([3.0, 4.0])
    mapped = transform.TransformPoint(tuple(-world_of(fixed2, x)))
    np.testing.assert_allclose(mapped, -world_of(fixed2, x + u2[:, 3, 4]), atol=1e-4)
