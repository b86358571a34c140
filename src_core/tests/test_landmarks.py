"""Landmarks: exact fits on known transforms, thin-plate interpolation, registration from points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepreg_core import landmarks, spatial
from deepreg_core.image import Image
from deepreg_core.inference import register


def _rotation(ndim: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    r = np.eye(ndim)
    r[:2, :2] = [[c, -s], [s, c]]
    return r


@pytest.mark.parametrize("ndim", [2, 3])
def test_known_transforms_are_recovered_exactly(ndim):
    rng = np.random.default_rng(ndim)
    fixed = rng.uniform(-50, 50, (12, ndim))
    shift = rng.uniform(-5, 5, ndim)
    cases = {
        "rigid": _rotation(ndim, 0.3),
        "similarity": 1.2 * _rotation(ndim, -0.2),
        "affine": _rotation(ndim, 0.1) @ np.diag(rng.uniform(0.8, 1.2, ndim))
        + 0.05 * rng.standard_normal((ndim, ndim)),
    }
    for kind, linear in cases.items():
        moving = fixed @ linear.T + shift
        fitted = landmarks.fit_transform(fixed, moving, kind)
        np.testing.assert_allclose(fitted.matrix[:ndim, :ndim], linear, atol=1e-9)
        np.testing.assert_allclose(fitted.matrix[:ndim, ndim], shift, atol=1e-9)
        assert fitted.residual_mm < 1e-9
    # a stiffer model than the truth fits in the least-squares sense, and says how far off
    sheared = fixed @ cases["affine"].T + shift
    assert landmarks.fit_transform(fixed, sheared, "rigid").residual_mm > 0.5


@pytest.mark.parametrize("ndim", [2, 3])
def test_thin_plate_spline_interpolates_its_landmarks_and_keeps_affine_pairs_affine(ndim):
    rng = np.random.default_rng(10 + ndim)
    fixed = rng.uniform(0, 40, (10, ndim))
    moving = fixed + rng.normal(0, 2.0, fixed.shape)  # not affine: local displacements
    spline = landmarks.fit_transform(fixed, moving, "tps")
    np.testing.assert_allclose(spline(fixed), moving, atol=1e-8)
    linear = np.eye(ndim) * 1.1
    affine_pair = fixed @ linear.T + 3.0
    flat = landmarks.fit_transform(fixed, affine_pair, "tps")
    probe = rng.uniform(0, 40, (20, ndim))
    np.testing.assert_allclose(flat(probe), probe @ linear.T + 3.0, atol=1e-6)


def test_bad_point_sets_get_clear_messages():
    square = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    with pytest.raises(ValueError, match="4 fixed and 3 moving"):
        landmarks.fit_transform(square, square[:3], "affine")
    with pytest.raises(ValueError, match="at least 3 point pairs"):
        landmarks.fit_transform(square[:2], square[:2], "affine")
    line = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    with pytest.raises(ValueError, match="collinear"):
        landmarks.fit_transform(line, line, "affine")
    with pytest.raises(ValueError, match="landmark model"):
        landmarks.fit_transform(square, square, "bspline")
    with pytest.raises(ValueError, match="pairs are matched by order"):
        landmarks.pair_points(square, square[:3])


def test_points_clicked_out_of_order_pair_by_label():
    fixed = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    moving = fixed[[2, 0, 1]] + 1.0
    f, m = landmarks.pair_points(fixed, moving, ["a", "b", "c"], ["c", "a", "b"])
    np.testing.assert_allclose(m - f, 1.0)
    with pytest.raises(ValueError, match="used more than once"):
        landmarks.pair_points(fixed, moving, ["a", "a", "c"], ["c", "a", "b"])


def _pair_under(matrix: np.ndarray, spacing=(1.5, 1.0)):
    """A smooth 2D image and the same image under a known voxel affine (moving(T x) = fixed(x))."""
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((1, 1, 8, 8)).astype(np.float32))
    data = torch.nn.functional.interpolate(coarse, size=(72, 64), mode="bicubic",
                                           align_corners=True)
    inverse = torch.from_numpy(np.linalg.inv(matrix)).float()[None]
    moved = spatial.warp_affine(data, inverse, padding="border")
    fixed = Image.from_array(data[0, 0].numpy(), spacing=spacing)
    moving = Image.from_array(moved[0, 0].numpy(), spacing=spacing)
    return fixed, moving


def test_register_from_landmarks_recovers_a_known_affine_and_reports_held_out_error():
    matrix = np.eye(3)
    matrix[:2, :2] = [[0.97, 0.08], [-0.06, 1.04]]
    matrix[:2, 2] = [2.5, -1.5]
    fixed, moving = _pair_under(matrix)
    rng = np.random.default_rng(1)
    fixed_points = rng.uniform(8, 56, (8, 2))
    moving_points = fixed_points @ matrix[:2, :2].T + matrix[:2, 2]
    result = register(fixed, moving, model="landmarks-affine", preset="fast",
                      fixed_points=fixed_points, moving_points=moving_points, landmark_holdout=3,
                      qa=False)
    assert result.model_name == "landmarks-affine"
    np.testing.assert_allclose(result.affine, matrix, atol=1e-6)
    truth = np.einsum("ij,j...->i...", matrix[:2, :2] - np.eye(2),
                      np.indices(fixed.shape, dtype=np.float64)) + matrix[:2, 2, None, None]
    assert np.abs(result.displacement - truth).max() < 1e-3
    assert result.metrics["tre_holdout_after_mm"] < 1e-3 < result.metrics["tre_holdout_before_mm"]


def test_thin_plate_registration_lands_every_landmark_on_its_pair():
    fixed, moving = _pair_under(np.eye(3))
    rng = np.random.default_rng(2)
    fixed_points = rng.uniform(8, 56, (7, 2))
    moving_points = fixed_points + rng.normal(0, 1.5, fixed_points.shape)
    result = register(fixed, moving, model="landmarks-tps", preset="fast", qa=False,
                      fixed_points=fixed_points, moving_points=moving_points)
    assert result.affine is None
    assert result.metrics["tre_after_mm"] < 0.05 < result.metrics["tre_before_mm"]


def test_landmark_guided_refinement_keeps_held_out_points_close():
    """Images and points agree: refining with the landmark term does not pull away from them."""
    matrix = np.eye(3)
    matrix[:2, 2] = [3.0, -2.0]
    fixed, moving = _pair_under(matrix)
    rng = np.random.default_rng(3)
    fixed_points = rng.uniform(10, 54, (9, 2))
    moving_points = fixed_points + matrix[:2, 2]
    result = register(fixed, moving, model="landmarks-rigid", refine_steps=20, qa=False,
                      fixed_points=fixed_points, moving_points=moving_points, landmark_holdout=3)
    assert result.metrics["tre_holdout_after_mm"] < 0.2
    assert result.metrics["ncc_after"] > result.metrics["ncc_before"]


def test_a_landmark_model_without_points_is_refused_before_any_work():
    fixed, moving = _pair_under(np.eye(3))
    with pytest.raises(ValueError, match="give fixed_points and moving_points"):
        register(fixed, moving, model="landmarks-affine")
    with pytest.raises(ValueError, match="landmarks-rigid"):
        register(fixed, moving, model="landmarks-bspline")


def _rigid_mm(angle_deg: float, shift_mm, spacing, shape) -> np.ndarray:
    """Voxel matrix of a rotation about the grid centre plus a shift, rigid in millimetres."""
    theta = np.radians(angle_deg)
    scale = np.diag([*spacing, 1.0])
    centre = (np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    motion = np.eye(3)
    motion[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    motion[:2, 2] = centre - motion[:2, :2] @ centre + np.asarray(shift_mm)
    return np.linalg.inv(scale) @ motion @ scale


def test_rigid_model_stays_rigid_in_millimetres_on_anisotropic_voxels():
    spacing = (1.5, 1.0)
    matrix = _rigid_mm(5.0, (2.0, -1.5), spacing, (72, 64))
    fixed, moving = _pair_under(matrix, spacing=spacing)
    result = register(fixed, moving, model="rigid", qa=False)
    assert result.model_name == "rigid" and result.affine is not None
    scale = np.diag([*spacing, 1.0])
    in_mm = scale @ result.affine @ np.linalg.inv(scale)
    linear = in_mm[:2, :2]
    np.testing.assert_allclose(linear @ linear.T, np.eye(2), atol=1e-5)  # a rotation, in mm
    angle = np.degrees(np.arctan2(linear[1, 0], linear[0, 0]))
    assert abs(angle - 5.0) < 0.5
    truth_mm = scale @ matrix @ np.linalg.inv(scale)
    assert np.abs(in_mm[:2, 2] - truth_mm[:2, 2]).max() < 0.5
    assert result.metrics["ncc_after"] > result.metrics["ncc_before"]
