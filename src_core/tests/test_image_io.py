"""Tests for deepreg_core.image (geometry) and deepreg_core.io (NIfTI, TIFF, PNG)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import skimage.io
import tifffile

from deepreg_core.image import Image
from deepreg_core.io import SUPPORTED_SUFFIXES, read_image, write_image

# ITU-R BT.709 luminance weights used by skimage.color.rgb2gray.
LUMA = np.array([0.2125, 0.7154, 0.0721])


def rotation_3d(angles: tuple[float, float, float]) -> np.ndarray:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_image(shape: tuple[int, ...] = (6, 7, 8), dtype=np.float32) -> Image:
    rng = np.random.default_rng(0)
    data = rng.normal(size=shape).astype(dtype)
    return Image.from_array(
        data,
        spacing=(0.8, 1.0, 2.5),
        origin=(-12.0, 30.5, 4.25),
        direction=rotation_3d((0.3, -0.2, 0.5)),
    )


# ------------------------------------------------------------------------------------- Image
def test_geometry_properties_of_known_affine() -> None:
    direction = rotation_3d((0.1, 0.2, -0.4))
    spacing = np.array([0.8, 1.0, 2.5])
    origin = np.array([5.0, -2.0, 7.5])
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    affine[:3, 3] = origin
    img = Image(np.zeros((3, 4, 5)), affine)
    assert img.ndim == 3 and img.shape == (3, 4, 5)
    np.testing.assert_allclose(img.spacing, spacing)
    np.testing.assert_allclose(img.origin, origin)
    np.testing.assert_allclose(img.direction, direction, atol=1e-12)
    built = Image.from_array(np.zeros((3, 4, 5)), spacing, origin, direction)
    np.testing.assert_allclose(built.affine, affine)


def test_index_to_world_known_points_2d() -> None:
    img = Image.from_array(np.zeros((4, 5)), spacing=(2.0, 0.5), origin=(1.0, 2.0))
    world = img.index_to_world(np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(world, [[1.0, 2.0], [3.0, 3.0], [7.0, 4.0]])
    np.testing.assert_allclose(img.world_to_index([7.0, 4.0]), [3.0, 4.0])


@pytest.mark.parametrize("ndim", [2, 3])
def test_world_to_index_inverts_index_to_world(ndim: int) -> None:
    rng = np.random.default_rng(1)
    direction = rotation_3d((0.3, 0.1, -0.7))[:ndim, :ndim] if ndim == 3 else np.array(
        [[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]]
    )
    img = Image.from_array(
        np.zeros((5,) * ndim), spacing=rng.uniform(0.3, 3.0, ndim), origin=rng.normal(size=ndim),
        direction=direction,
    )
    points = rng.uniform(-10, 10, size=(20, ndim))
    np.testing.assert_allclose(img.world_to_index(img.index_to_world(points)), points, atol=1e-10)


def test_with_data_keeps_geometry_and_checks_shape() -> None:
    img = oblique_image()
    labels = img.with_data(np.ones(img.shape, np.int16))
    np.testing.assert_array_equal(labels.affine, img.affine)
    assert labels.data.dtype == np.int16
    with pytest.raises(ValueError, match=r"expected shape \(6, 7, 8\).*got \(6, 7\)"):
        img.with_data(np.ones((6, 7)))


def test_affine_is_copied_and_read_only() -> None:
    affine = np.eye(3)
    img = Image(np.zeros((2, 2)), affine)
    affine[0, 0] = 5.0
    assert img.spacing == (1.0, 1.0)
    with pytest.raises(ValueError, match="read-only"):
        img.affine[0, 0] = 2.0


@pytest.mark.parametrize(
    ("data", "affine", "error", "match"),
    [
        (np.zeros(5), np.eye(2), ValueError, r"2D \(H, W\) or 3D.*got shape \(5,\)"),
        (np.zeros((2, 2, 2, 2)), np.eye(5), ValueError, r"got shape \(2, 2, 2, 2\)"),
        (np.zeros((0, 3)), np.eye(3), ValueError, "non-empty"),
        ([[0.0, 1.0]], np.eye(3), TypeError, "numpy array"),
        (np.array([["a", "b"]]), np.eye(3), TypeError, "numeric"),
        (np.zeros((3, 3)), np.eye(4), ValueError, r"expected shape \(3, 3\).*got \(4, 4\)"),
        (np.zeros((3, 3)), np.diag([1.0, np.nan, 1.0]), ValueError, "finite"),
        (np.zeros((3, 3)), np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1.0]]), ValueError, "last row"),
        (np.zeros((3, 3, 3)), np.diag([1.0, 0.0, 1.0, 1.0]), ValueError, "singular"),
    ],
)
def test_image_validation_errors(data, affine, error, match) -> None:
    with pytest.raises(error, match=match):
        Image(data, affine)


def test_from_array_and_points_validation() -> None:
    with pytest.raises(ValueError, match=r"positive.*\[1.0, -2.0\]"):
        Image.from_array(np.zeros((3, 3)), spacing=(1.0, -2.0))
    with pytest.raises(ValueError, match="expected 3 finite values"):
        Image.from_array(np.zeros((3, 3, 3)), spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"direction: expected a finite \(2, 2\)"):
        Image.from_array(np.zeros((3, 3)), direction=np.eye(3))
    with pytest.raises(ValueError, match=r"got shape \(1, 2, 2, 2\)"):
        Image.from_array(np.zeros((1, 2, 2, 2)))
    img = Image.from_array(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"shape \(N, 2\).*got shape \(4, 3\)"):
        img.world_to_index(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="finite coordinates"):
        img.index_to_world([[np.nan, 0.0]])


# ------------------------------------------------------------------------------------- NIfTI
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_data_and_oblique_affine(tmp_path: Path, suffix: str) -> None:
    img = oblique_image()
    path = tmp_path / f"vol{suffix}"
    write_image(img, path)
    back = read_image(path)
    np.testing.assert_array_equal(back.data, img.data)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5)
    np.testing.assert_allclose(back.spacing, (0.8, 1.0, 2.5), rtol=1e-6)
    on_disk = nib.load(path)
    np.testing.assert_allclose(on_disk.affine, img.affine, atol=1e-5)
    assert on_disk.header.get_xyzt_units()[0] == "mm"
    assert back.meta["format"] == "nifti" and back.meta["source"] == str(path)


def test_nifti_integer_labels_keep_dtype(tmp_path: Path) -> None:
    labels = np.random.default_rng(2).integers(0, 5, size=(4, 5, 6)).astype(np.int16)
    path = tmp_path / "labels.nii.gz"
    write_image(Image.from_array(labels, spacing=(1.0, 2.0, 3.0)), path)
    back = read_image(path)
    assert back.data.dtype == np.int16
    np.testing.assert_array_equal(back.data, labels)
    as_float = read_image(path, labels=False, dtype=np.float64)
    assert as_float.data.dtype == np.float64


def test_labels_true_on_float_file(tmp_path: Path) -> None:
    path = tmp_path / "seg.nii"
    write_image(Image.from_array(np.array([[[0.0, 1.0], [2.0, 3.0]]] * 2, np.float32)), path)
    back = read_image(path, labels=True)
    assert back.data.dtype == np.int32
    np.testing.assert_array_equal(back.data[0], [[0, 1], [2, 3]])
    write_image(Image.from_array(np.full((2, 2, 2), 0.5, np.float32)), path)
    with pytest.raises(ValueError, match="non-integer values"):
        read_image(path, labels=True)


def test_nifti_header_codes_survive(tmp_path: Path) -> None:
    source = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    source.set_sform(source.affine, code="scanner")
    source.set_qform(source.affine, code="talairach")
    nib.save(source, tmp_path / "src.nii.gz")
    img = read_image(tmp_path / "src.nii.gz")
    write_image(img.with_data(img.data + 1), tmp_path / "out.nii.gz")
    header = nib.load(tmp_path / "out.nii.gz").header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (1, 3)
    # A plain image written with the source as reference takes the reference's codes.
    write_image(Image(np.ones((4, 5, 6)), img.affine), tmp_path / "ref.nii", reference=img)
    header = nib.load(tmp_path / "ref.nii").header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (1, 3)


def test_nifti_2d_slice(tmp_path: Path) -> None:
    affine = np.array([[0.5, 0, 0, 10.0], [0, 0.7, 0, -4.0], [0, 0, 3.0, 2.0], [0, 0, 0, 1.0]])
    data = np.arange(42, dtype=np.float32).reshape(6, 7, 1)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "slice.nii.gz")
    img = read_image(tmp_path / "slice.nii.gz")
    assert img.ndim == 2 and img.shape == (6, 7)
    np.testing.assert_array_equal(img.data, data[:, :, 0])
    np.testing.assert_allclose(img.affine, [[0.5, 0, 10.0], [0, 0.7, -4.0], [0, 0, 1.0]])
    write_image(img, tmp_path / "again.nii.gz")
    back = nib.load(tmp_path / "again.nii.gz")
    assert back.shape == (6, 7, 1)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)


def test_nifti_4d_singleton_is_squeezed(tmp_path: Path) -> None:
    data = np.random.default_rng(3).normal(size=(4, 5, 6, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 2.0, 3.0, 1.0])), tmp_path / "v.nii")
    img = read_image(tmp_path / "v.nii")
    assert img.shape == (4, 5, 6)
    np.testing.assert_array_equal(img.data, data[..., 0])


def test_nifti_true_4d_is_refused(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(ValueError, match=r"shape \(4, 5, 6, 2\).*slicer\[\.\.\., 0\]"):
        read_image(tmp_path / "t.nii")


def test_nibabel_anatomical_example() -> None:
    from nibabel.testing import data_path

    path = Path(data_path) / "anatomical.nii"
    if not path.exists():
        pytest.skip("nibabel's anatomical.nii test file is not installed")
    reference = nib.load(path)
    img = read_image(path)
    assert img.shape == reference.shape
    np.testing.assert_allclose(img.affine, reference.affine)
    np.testing.assert_array_equal(img.data, np.asarray(reference.dataobj))
    assert np.issubdtype(img.data.dtype, np.integer)  # int16 on disk stays integer


# -------------------------------------------------------------------------------------- TIFF
def test_tiff_3d_round_trip_keeps_anisotropic_spacing(tmp_path: Path) -> None:
    data = np.random.default_rng(4).random((5, 8, 10)).astype(np.float32)
    img = Image.from_array(data, spacing=(2.5, 0.3, 0.7), meta={"unit": "um"})
    write_image(img, tmp_path / "stack.tif")
    back = read_image(tmp_path / "stack.tif")
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.spacing, (2.5, 0.3, 0.7), rtol=1e-6)
    assert back.meta["unit"] == "um"


def test_tiff_spacing_from_imagej_and_ome_files(tmp_path: Path) -> None:
    data = np.zeros((3, 6, 8), np.uint16)
    tifffile.imwrite(
        tmp_path / "ij.tif", data, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
        metadata={"spacing": 4.0, "unit": "micron", "axes": "ZYX"},
    )
    np.testing.assert_allclose(read_image(tmp_path / "ij.tif").spacing, (4.0, 0.5, 0.25))
    tifffile.imwrite(
        tmp_path / "x.ome.tif", data, ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.4, "PhysicalSizeZ": 2.0},
    )
    ome = read_image(tmp_path / "x.ome.tif")
    np.testing.assert_allclose(ome.spacing, (2.0, 0.4, 0.3))
    assert ome.data.dtype == np.uint16
    tifffile.imwrite(tmp_path / "plain.tif", data[0])
    assert read_image(tmp_path / "plain.tif").spacing == (1.0, 1.0)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_rgb_becomes_luminance_or_is_refused(tmp_path: Path, suffix: str) -> None:
    colours = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)
    path = tmp_path / f"rgb{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, colours, photometric="rgb")
    else:
        skimage.io.imsave(path, colours, check_contrast=False)
    img = read_image(path)
    assert img.meta["converted_from_rgb"] is True and img.data.dtype == np.float32
    np.testing.assert_allclose(img.data[0], [*LUMA, LUMA.sum()], atol=1e-6)
    with pytest.raises(ValueError, match=r"3 channels.*rgb='refuse'"):
        read_image(path, rgb="refuse")


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 10
    skimage.io.imsave(tmp_path / "a.png", rgba, check_contrast=False)
    np.testing.assert_allclose(read_image(tmp_path / "a.png").data, LUMA[1], atol=1e-6)


def test_tiff_multichannel_and_4d_refused(tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "c.tif", np.zeros((3, 6, 8), np.uint8), imagej=True, metadata={"axes": "CYX"}
    )
    with pytest.raises(ValueError, match=r"single-channel.*shape \(3, 6, 8\).*'CYX'"):
        read_image(tmp_path / "c.tif")
    tifffile.imwrite(tmp_path / "q.tif", np.zeros((2, 3, 6, 8), np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 6, 8\)"):
        read_image(tmp_path / "q.tif")


def test_tiff_write_warns_when_geometry_is_dropped(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="origin"):
        write_image(oblique_image(), tmp_path / "o.tif")
    np.testing.assert_allclose(read_image(tmp_path / "o.tif").spacing, (0.8, 1.0, 2.5), rtol=1e-6)


# --------------------------------------------------------------------------------------- PNG
def test_png_round_trip_uint8(tmp_path: Path) -> None:
    data = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    write_image(Image.from_array(data), tmp_path / "g.png")
    back = read_image(tmp_path / "g.png")
    assert back.data.dtype == np.uint8 and back.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_array_equal(skimage.io.imread(tmp_path / "g.png"), data)


def test_png_float_write_refused_unless_it_fits_uint8(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.tif or \.nii\.gz"):
        write_image(Image.from_array(np.full((4, 4), 0.5, np.float32)), tmp_path / "f.png")
    assert list(tmp_path.iterdir()) == []
    integral = np.arange(16, dtype=np.float32).reshape(4, 4) * 10
    write_image(Image.from_array(integral), tmp_path / "f.png")
    np.testing.assert_array_equal(read_image(tmp_path / "f.png").data, integral)
    with pytest.raises(ValueError, match="2D images only"):
        write_image(Image.from_array(np.zeros((2, 4, 4), np.uint8)), tmp_path / "v.png")


# ------------------------------------------------------------------------- atomic writes, errors
@pytest.mark.parametrize(("suffix", "module", "name"), [
    (".nii.gz", nib, "save"), (".tif", tifffile, "imwrite"),
])
def test_failed_write_leaves_original_untouched(tmp_path, monkeypatch, suffix, module, name):
    path = tmp_path / f"out{suffix}"
    write_image(oblique_image() if suffix == ".nii.gz" else Image.from_array(np.ones((4, 4))), path)
    original = path.read_bytes()

    def crash(*args, **kwargs):  # nib.save(img, path) / tifffile.imwrite(path, data)
        target = next(a for a in args if isinstance(a, (str, Path)))
        Path(target).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, name, crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image(Image.from_array(np.zeros((4, 4, 4))), path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"scan\.mha.*\.nii, \.nii\.gz, \.tif.*got '\.mha'"):
        read_image(tmp_path / "scan.mha")
    with pytest.raises(ValueError, match="one of"):
        write_image(Image.from_array(np.zeros((2, 2))), tmp_path / "scan.jpg")
    with pytest.raises(FileNotFoundError, match="missing.nii.gz: no such file"):
        read_image(tmp_path / "missing.nii.gz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_image(Image.from_array(np.zeros((2, 2))), tmp_path / "no" / "x.tif")
    assert len(SUPPORTED_SUFFIXES) == 5


@pytest.mark.parametrize("name", ["bad.nii", "bad.nii.gz", "bad.tif", "bad.png"])
def test_corrupt_files_raise_value_error(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(ValueError, match=r"bad\..*expected a readable .*(corrupt|truncated)"):
        read_image(tmp_path / name)


def test_truncated_nifti_gz(tmp_path: Path) -> None:
    write_image(oblique_image((16, 16, 16)), tmp_path / "full.nii.gz")
    raw = gzip.decompress((tmp_path / "full.nii.gz").read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw)[: len(raw) // 4])
    with pytest.raises(ValueError, match="expected a readable NIfTI"):
        read_image(tmp_path / "cut.nii.gz")


def test_argument_validation(tmp_path: Path) -> None:
    path = tmp_path / "x.nii"
    write_image(Image.from_array(np.zeros((2, 2, 2))), path)
    with pytest.raises(ValueError, match="'grey' or 'refuse'.*'gray'"):
        read_image(path, rgb="gray")
    with pytest.raises(TypeError, match="floating dtype.*int32"):
        read_image(path, dtype=np.int32)
    with pytest.raises(TypeError, match="expected a deepreg_core.image.Image, got ndarray"):
        write_image(np.zeros((2, 2)), path)
    with pytest.raises(TypeError, match="reference"):
        write_image(Image.from_array(np.zeros((2, 2))), path, reference=np.eye(3))
