"""Tests of deepreg_core.spatial against known truth (numpy, scipy.ndimage, analytic fields)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from scipy.linalg import expm

from deepreg_core.spatial import (
    affine_to_displacement,
    compose,
    identity_grid,
    integrate_velocity,
    invert,
    resample,
    resample_to,
    resize_displacement,
    transform_points,
    warp,
    warp_affine,
)

SHAPES = {2: (20, 23), 3: (10, 11, 12)}
NDIMS = pytest.mark.parametrize("ndim", [2, 3])


def _wave_field(shape: tuple[int, ...], amplitude: float, seed: int = 0) -> torch.Tensor:
    """Smooth field ``(1, ndim, *shape)``: one long-wavelength sinusoid per component."""
    rng = np.random.default_rng(seed)
    x = np.indices(shape, dtype=np.float64)
    comps = []
    for _ in shape:
        k = rng.uniform(0.5, 1.5, len(shape)) * 2 * np.pi / np.array(shape)
        phase = rng.uniform(0, 2 * np.pi)
        comps.append(amplitude * np.sin(np.tensordot(k, x, axes=1) + phase))
    return torch.tensor(np.stack(comps)[None], dtype=torch.float32)


def _bump_field(shape: tuple[int, ...], amplitude: float, seed: int = 0) -> torch.Tensor:
    """Smooth field that vanishes on the grid boundary, so x + u(x) stays on the grid."""
    x = np.indices(shape, dtype=np.float64)
    bump = np.prod([np.sin(np.pi * x[i] / (n - 1)) for i, n in enumerate(shape)], axis=0)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], len(shape))
    return torch.tensor((amplitude * signs.reshape(-1, *[1] * len(shape)) * bump)[None],
                        dtype=torch.float32)


def _random_affine(ndim: int, seed: int = 0, scale: float = 0.08, shift: float = 1.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = np.eye(ndim + 1)
    A[:ndim, :ndim] += rng.uniform(-scale, scale, (ndim, ndim))
    A[:ndim, ndim] = rng.uniform(-shift, shift, ndim)
    return A


def _image(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- grids and warps


@NDIMS
def test_identity_grid_holds_voxel_indices(ndim: int) -> None:
    shape = SHAPES[ndim]
    grid = identity_grid(shape, dtype=torch.float64)
    assert grid.shape == (1, ndim, *shape) and grid.dtype == torch.float64
    np.testing.assert_array_equal(grid[0].numpy(), np.indices(shape))


@NDIMS
def test_warp_by_integer_shift_equals_roll_in_interior(ndim: int) -> None:
    shape = SHAPES[ndim]
    shift = (2, -3, 1)[:ndim]
    image = _image(shape)
    u = torch.tensor(shift, dtype=torch.float32).view(1, ndim, *[1] * ndim).expand(1, ndim, *shape)
    expected = np.roll(image[0, 0].numpy(), [-s for s in shift], axis=tuple(range(ndim)))
    interior = tuple(slice(max(0, -s), n - max(0, s)) for s, n in zip(shift, shape))
    got = warp(image, u)[0, 0].numpy()
    np.testing.assert_allclose(got[interior], expected[interior], atol=1e-5)
    outside = np.ones(shape, bool)
    outside[interior] = False
    assert np.abs(got[outside]).max() < 1e-5  # zeros padding


@NDIMS
def test_zero_field_returns_input_exactly(ndim: int) -> None:
    image = torch.rand(3, 2, *SHAPES[ndim])
    assert torch.equal(warp(image, torch.zeros(1, ndim, *SHAPES[ndim])), image)


@NDIMS
@pytest.mark.parametrize(
    ("padding", "scipy_mode"),
    [("zeros", "grid-constant"), ("border", "nearest"), ("reflection", "mirror")],
)
def test_warp_matches_scipy_map_coordinates(ndim: int, padding: str, scipy_mode: str) -> None:
    shape = SHAPES[ndim]
    image, u = _image(shape), _wave_field(shape, amplitude=2.5)
    coords = np.indices(shape) + u[0].numpy().astype(np.float64)
    expected = ndi.map_coordinates(image[0, 0].numpy().astype(np.float64), coords, order=1,
                                   mode=scipy_mode)
    got = warp(image, u, padding=padding)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@NDIMS
def test_warp_broadcasts_batch_of_one(ndim: int) -> None:
    shape = SHAPES[ndim]
    images = torch.cat([_image(shape, seed) for seed in range(3)])
    u = _wave_field(shape, 1.5)
    batched = warp(images, u)
    for b in range(3):
        torch.testing.assert_close(batched[b : b + 1], warp(images[b : b + 1], u))
    fields = torch.cat([u, -u])
    out = warp(images[:1], fields)
    assert out.shape == (2, 1, *shape)
    torch.testing.assert_close(out[1:], warp(images[:1], -u))


@NDIMS
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64, torch.bool])
def test_nearest_keeps_label_dtype_and_values(ndim: int, dtype: torch.dtype) -> None:
    shape = SHAPES[ndim]
    values = torch.tensor([0, 1] if dtype == torch.bool else [0, 3, 7])
    generator = torch.Generator().manual_seed(1)
    labels = values[torch.randint(len(values), (1, 1, *shape), generator=generator)].to(dtype)
    out = warp(labels, _wave_field(shape, 2.0), mode="nearest")
    assert out.dtype == dtype
    assert set(out.unique().tolist()) <= set(values.to(dtype).tolist())
    # a half-integer-free shift moves labels exactly like np.roll
    shift = (1, -2, 2)[:ndim]
    u = torch.tensor(shift, dtype=torch.float32).view(1, ndim, *[1] * ndim).expand(1, ndim, *shape)
    interior = tuple(slice(max(0, -s), n - max(0, s)) for s, n in zip(shift, shape))
    expected = np.roll(labels[0, 0].numpy(), [-s for s in shift], axis=tuple(range(ndim)))
    np.testing.assert_array_equal(warp(labels, u, mode="nearest")[0, 0].numpy()[interior],
                                  expected[interior])


@NDIMS
def test_float64_inputs_give_float64_output(ndim: int) -> None:
    shape = SHAPES[ndim]
    out = warp(_image(shape).double(), _wave_field(shape, 1.0).double())
    assert out.dtype == torch.float64


# ----------------------------------------------------------------------------- affine


@NDIMS
def test_affine_to_displacement_is_matrix_times_index_minus_index(ndim: int) -> None:
    shape, A = SHAPES[ndim], _random_affine(ndim)
    u = affine_to_displacement(torch.tensor(A), shape)
    x = np.indices(shape).reshape(ndim, -1)
    expected = (A[:ndim, :ndim] @ x + A[:ndim, ndim:] - x).reshape(ndim, *shape)
    np.testing.assert_allclose(u[0].numpy(), expected, atol=1e-12)


@NDIMS
def test_warp_affine_matches_scipy_affine_transform(ndim: int) -> None:
    shape, A = SHAPES[ndim], _random_affine(ndim, seed=3)
    image = _image(shape)
    # scipy's matrix also maps output (fixed) index -> input (moving) index
    expected = ndi.affine_transform(image[0, 0].numpy().astype(np.float64), A, order=1,
                                    mode="grid-constant")
    got = warp_affine(image, torch.tensor(A, dtype=torch.float32))
    np.testing.assert_allclose(got[0, 0].numpy(), expected, atol=1e-5)
    via_field = warp(image, affine_to_displacement(torch.tensor(A, dtype=torch.float32), shape))
    torch.testing.assert_close(via_field, got, atol=1e-5, rtol=0)


@NDIMS
def test_warp_affine_batched_matrices(ndim: int) -> None:
    shape = SHAPES[ndim]
    mats = torch.tensor(np.stack([_random_affine(ndim, s) for s in range(2)]), dtype=torch.float32)
    image = _image(shape)
    out = warp_affine(image, mats)
    assert out.shape == (2, 1, *shape)
    torch.testing.assert_close(out[1:], warp_affine(image, mats[1]))


@NDIMS
def test_resample_to_other_grid_matches_scipy(ndim: int) -> None:
    shape, out_shape = SHAPES[ndim], (7, 9, 5)[:ndim]
    A = np.diag([2.5, 1.7, 2.0][:ndim] + [1.0])
    A[:ndim, ndim] = 0.6
    image = _image(shape)
    expected = ndi.affine_transform(image[0, 0].numpy().astype(np.float64), A,
                                    output_shape=out_shape, order=1, mode="grid-constant")
    got = resample(image, torch.tensor(A), out_shape)
    assert got.shape == (1, 1, *out_shape)
    np.testing.assert_allclose(got[0, 0].numpy(), expected, atol=1e-5)


# ------------------------------------------------------------------------- velocity, compose, invert


@NDIMS
def test_integrating_zero_velocity_gives_exact_zero(ndim: int) -> None:
    v = torch.zeros(2, ndim, *SHAPES[ndim])
    assert torch.equal(integrate_velocity(v), v)


@NDIMS
def test_small_velocity_integrates_to_about_itself(ndim: int) -> None:
    v = _wave_field(SHAPES[ndim], amplitude=0.05)
    u = integrate_velocity(v)
    assert float((u - v).norm() / v.norm()) < 0.02


@NDIMS
def test_linear_velocity_integrates_to_matrix_exponential(ndim: int) -> None:
    shape = (24, 24, 24)[:ndim]
    rng = np.random.default_rng(4)
    L = rng.uniform(-0.04, 0.04, (ndim, ndim))
    L[0, 1], L[1, 0] = 0.06, -0.06  # a rotation part as well
    centre = (np.array(shape) - 1) / 2
    x = np.indices(shape).reshape(ndim, -1) - centre[:, None]
    v = torch.tensor((L @ x).reshape(ndim, *shape)[None])
    expected = ((expm(L) - np.eye(ndim)) @ x).reshape(ndim, *shape)
    u = integrate_velocity(v, steps=7)[0].numpy()
    inner = (slice(None),) + (slice(3, -3),) * ndim
    np.testing.assert_allclose(u[inner], expected[inner], atol=1e-3)


@NDIMS
def test_compose_of_constant_shifts_adds_them(ndim: int) -> None:
    shape = SHAPES[ndim]
    a = torch.full((1, ndim, *shape), 0.75)
    b = torch.full((1, ndim, *shape), -1.25)
    torch.testing.assert_close(compose(a, b), a + b)


@NDIMS
def test_compose_of_affine_fields_is_matrix_product(ndim: int) -> None:
    shape = (24, 24, 24)[:ndim]
    A1, A2 = _random_affine(ndim, 1, shift=0.5), _random_affine(ndim, 2, shift=0.5)
    u1 = affine_to_displacement(torch.tensor(A1), shape)
    u2 = affine_to_displacement(torch.tensor(A2), shape)
    expected = affine_to_displacement(torch.tensor(A1 @ A2), shape)  # phi_first o phi_second
    inner = (slice(None), slice(None)) + (slice(4, -4),) * ndim
    torch.testing.assert_close(compose(u1, u2)[inner], expected[inner], atol=1e-6, rtol=0)
    wrong_order = affine_to_displacement(torch.tensor(A2 @ A1), shape)
    assert (compose(u1, u2) - wrong_order)[inner].abs().max() > 1e-2


@NDIMS
def test_warping_by_composition_equals_warping_twice(ndim: int) -> None:
    shape = SHAPES[ndim]
    # for an image linear in the index, linear interpolation is exact, so both paths agree exactly
    weights = torch.tensor([0.3, -0.2, 0.5][:ndim], dtype=torch.float64)
    image = (identity_grid(shape, dtype=torch.float64) * weights.view(1, ndim, *[1] * ndim)).sum(
        1, keepdim=True) + 5.0
    a, b = _bump_field(shape, 1.2, 0).double(), _bump_field(shape, 0.9, 1).double()
    twice = warp(warp(image, a), b)
    torch.testing.assert_close(warp(image, compose(a, b)), twice, atol=1e-9, rtol=0)
    assert (warp(image, compose(b, a)) - twice).abs().max() > 1e-3


@NDIMS
def test_invert_gives_inverse(ndim: int) -> None:
    shape = (24, 24, 24)[:ndim]
    u = _bump_field(shape, 2.0, 5)
    w = invert(u)
    assert compose(u, w).abs().max() < 1e-3
    assert compose(w, u).abs().max() < 0.05  # interpolation error; |u| reaches 2
    assert (invert(w) - u).abs().max() < 0.05


# ----------------------------------------------------------------------------- resizing, points


@NDIMS
@pytest.mark.parametrize("new_shape", [(33, 41, 21), (9, 11, 6)])
def test_resize_affine_field_equals_field_made_on_new_grid(
    ndim: int, new_shape: tuple[int, ...]
) -> None:
    old_shape, new_shape = (17, 21, 11)[:ndim], new_shape[:ndim]
    A = _random_affine(ndim, 7)
    S = np.diag([(o - 1) / (n - 1) for o, n in zip(old_shape, new_shape)] + [1.0])  # new -> old
    expected = affine_to_displacement(torch.tensor(np.linalg.inv(S) @ A @ S), new_shape)
    got = resize_displacement(affine_to_displacement(torch.tensor(A), old_shape), new_shape)
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)


@NDIMS
def test_transform_points(ndim: int) -> None:
    shape = SHAPES[ndim]
    points = torch.rand(11, ndim, dtype=torch.float64) * (torch.tensor(shape) - 1)
    shift = torch.tensor([1.5, -0.25, 2.0][:ndim], dtype=torch.float64)
    constant = shift.view(1, ndim, *[1] * ndim).expand(1, ndim, *shape)
    torch.testing.assert_close(transform_points(points, constant), points + shift)
    A = _random_affine(ndim, 8)
    affine = affine_to_displacement(torch.tensor(A), shape)
    expected = points @ torch.tensor(A[:ndim, :ndim]).T + torch.tensor(A[:ndim, ndim])
    torch.testing.assert_close(transform_points(points, affine), expected)


# ----------------------------------------------------------------------------- gradients, devices


@NDIMS
def test_gradcheck_warp(ndim: int) -> None:
    shape = (4, 5, 3)[:ndim]
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 2, *shape, dtype=torch.float64, generator=generator, requires_grad=True)
    u = (0.2 + 0.6 * torch.rand(1, ndim, *shape, dtype=torch.float64, generator=generator))
    signs = torch.where(torch.rand(u.shape, generator=generator) > 0.5, 1.0, -1.0)
    u = (u * signs).requires_grad_()  # |u| in [0.2, 0.8]: sample points avoid the grid nodes
    assert torch.autograd.gradcheck(lambda i, d: warp(i, d), (image, u))


@NDIMS
def test_gradcheck_warp_affine_wrt_matrix(ndim: int) -> None:
    image = torch.rand(1, 1, *(4, 5, 3)[:ndim], dtype=torch.float64,
                       generator=torch.Generator().manual_seed(2))
    A = torch.tensor(_random_affine(ndim, 9, shift=0.3))
    top, last = A[:ndim].clone().requires_grad_(), A[ndim:]  # the last row stays (0, .., 0, 1)
    assert torch.autograd.gradcheck(lambda t: warp_affine(image, torch.cat([t, last])), (top,))


@NDIMS
def test_gradcheck_integrate_velocity(ndim: int) -> None:
    shape = (4, 5, 3)[:ndim]
    generator = torch.Generator().manual_seed(1)
    v = (0.3 * torch.randn(1, ndim, *shape, dtype=torch.float64, generator=generator))
    assert torch.autograd.gradcheck(lambda x: integrate_velocity(x, steps=3), (v.requires_grad_(),))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@NDIMS
def test_cuda_matches_cpu(ndim: int) -> None:
    shape = SHAPES[ndim]
    image, u = _image(shape), _wave_field(shape, 2.0)
    torch.testing.assert_close(warp(image.cuda(), u.cuda()).cpu(), warp(image, u), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(integrate_velocity(u.cuda() * 0.3).cpu(),
                               integrate_velocity(u * 0.3), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- Image resampling


def _world_image(shape, spacing, origin, flip_axis=None):
    from deepreg_core.image import Image

    ndim = len(shape)
    affine = np.diag(list(spacing) + [1.0])
    affine[:ndim, ndim] = origin
    if flip_axis is not None:
        affine[:, flip_axis] *= -1
    world = (affine[:ndim, :ndim] @ np.indices(shape).reshape(ndim, -1) + affine[:ndim, ndim:])
    values = (0.3 * world[0] - 0.2 * world[1] + 0.1 * world[-1] + 1.0).reshape(shape)
    return Image(data=values.astype(np.float32), affine=affine), world.reshape(ndim, *shape)


@NDIMS
def test_resample_to_recovers_values_of_a_linear_world_function(ndim: int) -> None:
    reference, _ = _world_image((16, 18, 12)[:ndim], (1.0, 1.0, 1.0)[:ndim], (0.0,) * ndim)
    moving, _ = _world_image((9, 7, 8)[:ndim], (2.0, 3.0, 2.0)[:ndim], (-1.0, -0.5, 0.5)[:ndim])
    out = resample_to(moving, reference, padding="border")
    assert out.data.shape == reference.data.shape and out.data.dtype == np.float32
    np.testing.assert_array_equal(out.affine, reference.affine)
    # inside the moving image's extent linear interpolation reproduces the linear function
    inv = np.linalg.inv(moving.affine) @ reference.affine
    idx = np.tensordot(inv[:ndim, :ndim], np.indices(reference.data.shape), axes=1)
    idx += inv[:ndim, ndim].reshape(-1, *[1] * ndim)
    inside = np.all((idx >= 0) & (idx <= np.reshape(moving.data.shape, (-1,) + (1,) * ndim) - 1), 0)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out.data[inside], reference.data[inside], atol=1e-4)


@NDIMS
def test_resample_to_half_resolution_copy_lands_back(ndim: int) -> None:
    shape = (32, 30, 28)[:ndim]
    x = np.indices(shape, dtype=np.float64)
    smooth = np.prod([np.cos(2 * np.pi * x[i] / (2 * n)) for i, n in enumerate(shape)], axis=0)
    from deepreg_core.image import Image

    reference = Image(data=smooth.astype(np.float32), affine=np.eye(ndim + 1))
    coarse = Image(data=smooth[(slice(None, None, 2),) * ndim].astype(np.float32),
                   affine=np.diag([2.0] * ndim + [1.0]))
    out = resample_to(coarse, reference, padding="border")
    inner = tuple(slice(0, n - 2) for n in shape)
    # linear interpolation error bound with step h = 2: sum_i h**2 / 8 * max|d2f/dx_i2|
    bound = sum(0.5 * (np.pi / n) ** 2 for n in shape)
    np.testing.assert_allclose(out.data[inner], smooth[inner], atol=1.02 * bound)
    assert np.abs(out.data[inner] - smooth[inner]).max() > 0.1 * bound  # the bound is not slack


@NDIMS
def test_resample_to_the_same_grid_is_an_independent_exact_copy(ndim: int) -> None:
    from deepreg_core.image import Image

    shape = (6, 5, 4)[:ndim]
    affine = np.diag([1.5, 2.0, 0.7][:ndim] + [1.0])
    affine[:ndim, ndim] = (3.0, -1.0, 2.0)[:ndim]
    rng = np.random.default_rng(0)
    image = Image(data=rng.random(shape).astype(np.float64), affine=affine)
    labels = Image(data=rng.integers(0, 5, shape).astype(np.int16), affine=affine)
    out = resample_to(image, image)
    assert out.data.dtype == np.float32 and out.data is not image.data
    np.testing.assert_array_equal(out.data, image.data.astype(np.float32))
    out_labels = resample_to(labels, image, mode="nearest")
    assert out_labels.data.dtype == np.int16
    out_labels.data[...] = 99  # the copy is the caller's own
    assert labels.data.max() < 5
    moved = affine.copy()
    moved[0, ndim] += 0.75  # half a voxel along axis 0: interpolation, not a copy
    shifted = Image(data=image.data, affine=moved)
    assert not np.allclose(resample_to(shifted, image).data, out.data)


@NDIMS
def test_resample_to_flipped_direction(ndim: int) -> None:
    from deepreg_core.image import Image

    shape = SHAPES[ndim]
    data = _image(shape)[0, 0].numpy()
    reference = Image(data=data, affine=np.eye(ndim + 1))
    flip = np.eye(ndim + 1)
    flip[0, 0], flip[0, ndim] = -1.0, shape[0] - 1  # same world box, axis 0 reversed
    moving = Image(data=np.ascontiguousarray(data[::-1]), affine=flip)
    np.testing.assert_allclose(resample_to(moving, reference).data, data, atol=1e-5)
    labels = Image(data=(np.ascontiguousarray(data[::-1]) * 5).astype(np.int16), affine=flip)
    out = resample_to(labels, reference, mode="nearest")
    assert out.data.dtype == np.int16
    np.testing.assert_array_equal(out.data, (data * 5).astype(np.int16))


# ----------------------------------------------------------------------------- input errors


def _errors():
    img2, img3 = torch.rand(1, 1, 8, 9), torch.rand(1, 1, 6, 7, 8)
    u2 = torch.zeros(1, 2, 8, 9)
    nan_img = img2.clone()
    nan_img[0, 0, 1, 1] = float("nan")
    nan_u = u2.clone()
    nan_u[0, 1, 2, 2] = float("nan")
    return [
        (lambda: warp(img2, torch.zeros(1, 3, 8, 9, 4)), ValueError,
         "expected 2 spatial axes.*got 5"),
        (lambda: warp(img3, torch.zeros(1, 2, 6, 7, 8)), ValueError, "expected 3 channels.*got 2"),
        (lambda: warp(img2, torch.zeros(1, 2, 8, 8)), ValueError, "share their spatial shape.*got"),
        (lambda: warp(nan_img, u2), ValueError, "expected finite values, got 1 NaN"),
        (lambda: warp(img2, nan_u), ValueError, "expected finite values, got 1 NaN"),
        (lambda: warp(torch.rand(1, 1, 0, 9), u2), ValueError, "expected a non-empty tensor"),
        (lambda: warp(img2, u2, mode="cubic"), ValueError, "expected one of .*got 'cubic'"),
        (lambda: warp(img2, u2, padding="wrap"), ValueError, "expected one of .*got 'wrap'"),
        (lambda: warp(img2.long(), u2), TypeError,
         "expected a floating-point tensor.*mode='nearest'"),
        (lambda: warp(img2, u2.long()), TypeError, "expected a floating-point tensor, got dtype"),
        (lambda: warp(img2.numpy(), u2), TypeError, "expected a torch.Tensor, got ndarray"),
        (lambda: warp(torch.rand(2, 1, 8, 9), torch.zeros(3, 2, 8, 9)), ValueError,
         "equal batch sizes or a batch of 1, got 2 and 3"),
        (lambda: warp(img2[0], u2), ValueError, r"expected shape \(B, C, H, W\)"),
        (lambda: affine_to_displacement(torch.eye(4), (8, 9)), ValueError,
         r"expected shape \(3, 3\).*got \(4, 4\)"),
        (lambda: affine_to_displacement(torch.ones(3, 3), (8, 9)), ValueError, "last row"),
        (lambda: affine_to_displacement(torch.eye(3), (8, 9, 2, 2)), ValueError,
         "expected 2 or 3 positive sizes, got"),
        (lambda: identity_grid(8), TypeError, "expected a sequence of 2 or 3 ints, got 8"),
        (lambda: resample(img2, torch.eye(3), (4, 4, 4)), ValueError, "expected 2 sizes.*got"),
        (lambda: warp_affine(img2, torch.eye(4)), ValueError, r"expected shape \(3, 3\)"),
        (lambda: compose(u2, torch.zeros(1, 2, 8, 8)), ValueError, "share their spatial shape"),
        (lambda: integrate_velocity(u2, steps=-1), ValueError, "expected an integer >= 0, got -1"),
        (lambda: integrate_velocity(torch.zeros(1, 3, 8, 9)), ValueError,
         "one channel per spatial"),
        (lambda: invert(u2, iterations=0), ValueError, "expected an integer >= 1, got 0"),
        (lambda: resize_displacement(u2, (4, 4, 4)), ValueError, "expected 2 sizes.*got"),
        (lambda: resize_displacement(u2, (1, 4)), ValueError, "at least 2 voxels.*got"),
        (lambda: transform_points(torch.zeros(5, 3), u2), ValueError, r"expected shape \(N, 2\)"),
        (lambda: transform_points(torch.zeros(5, 2), torch.zeros(2, 2, 8, 9)), ValueError,
         "expected a batch of 1, got 2"),
    ]


@pytest.mark.parametrize("index", range(len(_errors())))
def test_bad_input_raises_with_expected_and_got(index: int) -> None:
    call, exc, match = _errors()[index]
    with pytest.raises(exc, match=match):
        call()


def test_resample_to_refuses_bad_inputs() -> None:
    from deepreg_core.image import Image

    a = Image(data=np.zeros((4, 5), np.float32), affine=np.eye(3))
    b = Image(data=np.zeros((4, 5, 6), np.float32), affine=np.eye(4))
    with pytest.raises(ValueError, match=r"same number of spatial axes.*\(4, 5\).*\(4, 5, 6\)"):
        resample_to(a, b)
    with pytest.raises(TypeError, match="expected a deepreg_core.image.Image, got ndarray"):
        resample_to(a.data, a)


def test_check_finite_fast_path_neither_misses_nor_invents_bad_values() -> None:
    from deepreg_core._validate import check_finite

    huge = torch.full((4,), 3.0e38)  # finite values whose sum overflows to inf
    assert check_finite(huge, "x") is huge
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.zeros(5)
        x[2] = bad
        with pytest.raises(ValueError, match="1 NaN or infinite value"):
            check_finite(x, "x")
