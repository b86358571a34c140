"""Reader and writer: odd NIfTI/TIFF files open in physical space and save back unchanged."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_deepreg._reader import get_reader, read_field_layers, read_layers


def _save_nifti(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


def _rotation(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


@pytest.fixture
def volume():
    return np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)


def test_refuses_what_it_cannot_read(tmp_path, volume):
    four_d = _save_nifti(tmp_path / "bold.nii.gz", np.zeros((4, 5, 6, 3), np.float32), np.eye(4))
    field = _save_nifti(tmp_path / "warp.nii.gz", np.zeros((4, 5, 6, 1, 3), np.float32), np.eye(4))
    corrupt = tmp_path / "broken.nii.gz"
    corrupt.write_bytes(b"not a nifti file at all")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    ok = _save_nifti(tmp_path / "t1.nii.gz", volume, np.eye(4))
    for path in (four_d, str(corrupt), str(text), str(tmp_path), [ok, ok],
                 str(tmp_path / "missing.nii")):
        assert get_reader(path) is None, path
    # called directly, the reader returns None instead of raising
    assert read_layers(four_d) is None
    assert read_layers(str(corrupt)) is None
    assert get_reader(ok) is read_layers
    # a displacement field opens as a field layer (its magnitude, the field in the metadata)
    assert get_reader(field) is read_field_layers
    (data, kwargs, kind), = read_field_layers(field)
    assert data.shape == (4, 5, 6) and kwargs["metadata"]["deepreg_field"].shape == (3, 4, 5, 6)


def test_anisotropic_nifti_is_placed_by_scale_and_translate(tmp_path, volume):
    affine = np.diag([0.5, 1.0, 3.0, 1.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    path = _save_nifti(tmp_path / "aniso.nii.gz", volume, affine)
    [(data, kwargs, layer_type)] = read_layers(path)
    assert layer_type == "image"
    assert kwargs["name"] == "aniso"
    np.testing.assert_allclose(kwargs["scale"], [0.5, 1.0, 3.0])
    np.testing.assert_allclose(kwargs["translate"], [10.0, -20.0, 5.0])
    assert "affine" not in kwargs
    np.testing.assert_allclose(data, volume)


def test_oblique_nifti_gets_the_full_affine_in_the_viewer(tmp_path, volume, make_napari_viewer):
    affine = np.eye(4)
    affine[:3, :3] = _rotation(30.0) @ np.diag([1.0, 2.0, 1.5])
    affine[:3, 3] = [3.0, 4.0, -5.0]
    path = _save_nifti(tmp_path / "oblique.nii.gz", volume, affine)
    viewer = make_napari_viewer()
    [layer] = viewer.open(path, plugin="napari-deepreg")
    np.testing.assert_allclose(layer.affine.affine_matrix, affine, atol=1e-5)
    # a voxel lands where nibabel's affine puts it
    voxel = np.array([2.0, 3.0, 4.0])
    np.testing.assert_allclose(layer.data_to_world(voxel), (affine @ [*voxel, 1])[:3], atol=1e-4)


def test_flipped_axes_are_oblique_for_napari(tmp_path, volume):
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # LAS: a flip is not a positive scale
    [(_, kwargs, _)] = read_layers(_save_nifti(tmp_path / "las.nii", volume, affine))
    np.testing.assert_allclose(kwargs["affine"], affine)


def test_label_maps_open_as_labels(tmp_path):
    labels = np.random.default_rng(1).integers(0, 5, (6, 7, 8)).astype(np.int16)
    intensities = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    by_values = _save_nifti(tmp_path / "subject.nii.gz", labels, np.eye(4))
    by_name = _save_nifti(tmp_path / "aseg.nii.gz", intensities, np.eye(4))
    image = _save_nifti(tmp_path / "t1.nii.gz", intensities, np.eye(4))
    assert read_layers(by_values)[0][2] == "labels"
    assert read_layers(by_name)[0][2] == "labels"
    assert read_layers(image)[0][2] == "image"
    assert np.issubdtype(read_layers(by_values)[0][0].dtype, np.integer)


def test_tiff_spacing_becomes_scale(tmp_path):
    data = np.random.default_rng(2).random((5, 16, 12)).astype(np.float32)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    [(read, kwargs, layer_type)] = get_reader(str(path))(str(path))
    assert layer_type == "image"
    np.testing.assert_allclose(kwargs["scale"], [2.0, 0.5, 0.25])
    np.testing.assert_allclose(read, data)


def test_writer_round_trip_keeps_geometry_and_header(tmp_path, volume, make_napari_viewer):
    affine = np.eye(4)
    affine[:3, :3] = _rotation(-20.0) @ np.diag([0.8, 1.0, 2.5])
    affine[:3, 3] = [-30.0, 12.0, 7.0]
    source = nib.Nifti1Image(volume, affine)
    source.header.set_qform(affine, code=2)  # aligned to another scan: the code must survive
    source.header.set_sform(affine, code=2)
    nib.save(source, tmp_path / "in.nii.gz")
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "in.nii.gz"), plugin="napari-deepreg")
    out = tmp_path / "out.nii.gz"
    written = layer.save(str(out), plugin="napari-deepreg")
    assert written == [str(out)]
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    np.testing.assert_allclose(back.get_fdata(), volume, atol=1e-6)
    assert int(back.header["sform_code"]) == 2


def test_writer_builds_the_affine_from_scale_and_translate(tmp_path):
    from napari_deepreg._writer import write_image, write_labels

    data = np.random.default_rng(3).random((9, 10)).astype(np.float32)
    write_image(str(tmp_path / "a.tif"), data, {"scale": [0.5, 0.25], "translate": [0, 0]})
    [(read, kwargs, _)] = read_layers(str(tmp_path / "a.tif"))
    np.testing.assert_allclose(read, data)
    np.testing.assert_allclose(kwargs["scale"], [0.5, 0.25])
    labels = (data > 0.5).astype(np.uint8) + 1
    write_labels(str(tmp_path / "l.nii.gz"), labels,
                 {"scale": [2.0, 3.0], "translate": [1.0, -1.0], "name": "mask"})
    [(read, kwargs, layer_type)] = read_layers(str(tmp_path / "l.nii.gz"))
    assert layer_type == "labels"
    np.testing.assert_array_equal(read, labels)
    np.testing.assert_allclose(kwargs["translate"], [1.0, -1.0])


def test_writer_refuses_rgb_and_4d_with_a_message(tmp_path):
    from napari_deepreg._writer import write_image

    with pytest.raises(ValueError, match="RGB"):
        write_image(str(tmp_path / "c.nii"), np.zeros((4, 4, 3)), {"rgb": True, "name": "c"})
    with pytest.raises(ValueError, match="2D or 3D"):
        write_image(str(tmp_path / "t.nii"), np.zeros((2, 4, 4, 4)), {"name": "t"})
