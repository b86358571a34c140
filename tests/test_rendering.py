"""Pure helpers: pictures of a field, layer geometry, field layers (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deepreg import _fields, _layers, _rendering


def _scaling_field(shape, s):
    """``phi(x) = c + s (x - c)`` as a displacement ``(ndim, *shape)``: det J = s**ndim."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    return np.stack([(s - 1.0) * (g - (n - 1) / 2) for g, n in zip(grids, shape)])


def test_grid_of_zero_field_is_straight_lines_at_the_period():
    grid = _rendering.deformation_grid(np.zeros((2, 17, 13)), period=4)
    rows = np.flatnonzero(grid.min(axis=1) == 1.0)
    cols = np.flatnonzero(grid.min(axis=0) == 1.0)
    assert rows.tolist() == [0, 4, 8, 12, 16] and cols.tolist() == [0, 4, 8, 12]
    assert grid[2, 2] == 0.0


def test_grid_follows_a_shift_and_upsampling_keeps_the_corners():
    u = np.zeros((2, 17, 13), np.float32)
    u[0] = 1.0  # phi_0 = x_0 + 1: the row lines move up by one voxel
    grid = _rendering.deformation_grid(u, period=4)
    assert np.flatnonzero(grid.min(axis=1) == 1.0).tolist() == [3, 7, 11, 15]
    fine = _rendering.deformation_grid(u, period=4, factor=3)
    assert fine.shape == _rendering.upsampled_shape((17, 13), 3) == (49, 37)
    assert np.flatnonzero(fine.min(axis=1) == 1.0).tolist() == [9, 21, 33, 45]


def test_grid_in_3d_slices_show_in_plane_lines_and_3d_shows_lattice():
    u = np.zeros((3, 9, 9, 9), np.float32)
    slice_view = _rendering.deformation_grid(u, displayed=(1, 2), period=4)
    assert slice_view[1, 4].min() == 1.0  # every slice shows its (y, x) grid
    lattice = _rendering.deformation_grid(u, displayed=(0, 1, 2), period=4)
    assert lattice[1, 4].max() == 1.0 and lattice[1, 4, 1] == 0.0  # only points off the planes
    assert lattice[4, 4].min() == 1.0  # a lattice line along x
    with pytest.raises(ValueError, match="displayed"):
        _rendering.deformation_grid(u, displayed=(3,))
    with pytest.raises(ValueError, match="one channel per spatial axis"):
        _rendering.deformation_grid(np.zeros((3, 8, 8)))


def test_checkerboard_difference_and_magnitude():
    rng = np.random.default_rng(0)
    fixed, warped = rng.random((8, 8)), 5.0 + 3.0 * rng.random((8, 8))
    board = _rendering.checkerboard(fixed, warped, tiles=4)
    f, w = _rendering._normalise(fixed), _rendering._normalise(warped)
    np.testing.assert_allclose(board[:2, :2], f[:2, :2])  # tile (0, 0): fixed
    np.testing.assert_allclose(board[:2, 2:4], w[:2, 2:4])
    np.testing.assert_allclose(board[2:4, :2], w[2:4, :2])
    np.testing.assert_allclose(board[2:4, 2:4], f[2:4, 2:4])
    np.testing.assert_allclose(_rendering.difference(fixed, 2 * fixed + 1), 0.0, atol=1e-6)
    u = np.zeros((2, 4, 4), np.float32)
    u[0], u[1] = 3.0, 4.0
    np.testing.assert_allclose(_rendering.displacement_magnitude(u), 5.0)
    np.testing.assert_allclose(_rendering.displacement_magnitude(u, (2.0, 1.0)), np.hypot(6, 4))
    with pytest.raises(ValueError, match="one shape"):
        _rendering.checkerboard(fixed, warped[:4])


def test_jacobian_limits_are_centred_on_one():
    low, high = _rendering.jacobian_limits(np.array([0.5, 1.0, 1.2]))
    assert low + high == pytest.approx(2.0)
    assert 0.5 < low < 0.55  # the 99th percentile of |J - 1|
    assert _rendering.jacobian_limits(np.ones((3, 3))) == (0.95, 1.05)


@pytest.mark.parametrize("shape", [(12, 14), (6, 7, 8)])
def test_analyse_field_uniform_scaling(shape):
    s = 1.3
    stats = _fields.analyse_field(_scaling_field(shape, s))
    np.testing.assert_allclose(stats.jacobian, s ** len(shape), rtol=1e-5)
    assert stats.folding_fraction == 0.0 and stats.folds.sum() == 0


def test_analyse_field_finds_a_fold():
    u = np.zeros((2, 20, 20), np.float32)
    u[0, 8:12] = -2.5 * (np.arange(8, 12, dtype=np.float32)[:, None] - 9.5)  # rows swap order
    stats = _fields.analyse_field(u)
    assert 0.0 < stats.folding_fraction < 0.5
    assert stats.folds[8:12].any() and not stats.folds[:5].any()


def test_vector_axis_and_field_layer_units(make_napari_viewer):
    assert _fields.vector_axis((2, 5, 6)) == 0 and _fields.vector_axis((5, 6, 7, 3)) == -1
    assert _fields.vector_axis((5, 6)) is None and _fields.vector_axis((4, 5, 6)) is None
    viewer = make_napari_viewer()
    u = np.ones((2, 5, 6), np.float32)
    layer = viewer.add_image(u, scale=(1, 2.0, 0.5), translate=(0, 3.0, 4.0), name="f")
    assert _fields.is_field_layer(layer)
    vox, matrix = _fields.field_from_layer(layer, "voxels")
    np.testing.assert_allclose(vox, 1.0)
    np.testing.assert_allclose(matrix, [[2.0, 0, 3.0], [0, 0.5, 4.0], [0, 0, 1]])
    world, _ = _fields.field_from_layer(layer, "world")
    np.testing.assert_allclose(world[0], 0.5)  # 1 world unit / 2.0 per voxel
    np.testing.assert_allclose(world[1], 2.0)
    last = viewer.add_image(np.moveaxis(u, 0, -1), scale=(2.0, 0.5, 1.0), rgb=False)
    vox_last, matrix_last = _fields.field_from_layer(last)
    np.testing.assert_allclose(vox_last, vox)
    np.testing.assert_allclose(matrix_last[:2, :2], matrix[:2, :2])
    with pytest.raises(ValueError, match="not a displacement field"):
        _fields.field_from_layer(viewer.add_image(np.zeros((5, 6))))
    with pytest.raises(ValueError, match="no layer chosen"):
        _fields.field_from_layer(None)


def test_layer_world_matrix_matches_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    affine = np.eye(4)
    affine[:3, 3] = [1.0, 2.0, 3.0]
    layer = viewer.add_image(np.zeros((4, 5, 6)), scale=(2, 3, 4), translate=(5, 6, 7),
                             rotate=30, affine=affine)
    np.testing.assert_allclose(_layers.layer_world_matrix(layer),
                               layer._data_to_world.affine_matrix, atol=1e-9)


def test_layer_to_image_copies_and_checks(make_napari_viewer):
    viewer = make_napari_viewer()
    data = np.arange(20, dtype=np.float32).reshape(4, 5)
    layer = viewer.add_image(data, scale=(2.0, 0.5), translate=(1.0, 1.0))
    image = _layers.layer_to_image(layer, "fixed")
    assert image.spacing == (2.0, 0.5) and image.origin.tolist() == [1.0, 1.0]
    image.data[0, 0] = 99.0
    assert layer.data[0, 0] == 0.0  # a copy: the layer is never modified
    rgb = viewer.add_image(np.ones((4, 5, 3), np.float32), rgb=True)
    grey = _layers.layer_to_image(rgb, "moving")
    assert grey.shape == (4, 5) and grey.meta["converted_from_rgb"]
    np.testing.assert_allclose(grey.data, 1.0, rtol=1e-5)
    bad = data.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _layers.layer_to_image(viewer.add_image(bad), "moving")
    with pytest.raises(TypeError, match="expected a napari Image layer, got Points"):
        _layers.layer_to_image(viewer.add_points([[1, 1]]), "fixed")
    with pytest.raises(ValueError, match="2D or 3D"):
        _layers.layer_to_image(viewer.add_image(np.zeros((2, 3, 4, 5))), "fixed")
    with pytest.raises(ValueError, match="no layer chosen"):
        _layers.layer_to_image(None, "fixed")


def test_points_to_voxels_goes_through_world(make_napari_viewer):
    from deepreg_core.image import Image

    viewer = make_napari_viewer()
    image = Image.from_array(np.zeros((10, 10)), spacing=(2.0, 2.0), origin=(4.0, 0.0))
    points = viewer.add_points([[3.0, 2.0]], scale=(2.0, 2.0))  # world (6, 4)
    np.testing.assert_allclose(_layers.points_to_voxels(points, image, "pts"), [[1.0, 2.0]])
    with pytest.raises(ValueError, match="3D points"):
        _layers.points_to_voxels(points, Image.from_array(np.zeros((4, 4, 4))), "pts")
