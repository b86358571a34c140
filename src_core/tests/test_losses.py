"""Losses against known truth: analytic values, scipy references, invariances, gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from deepreg_core import losses as L
from deepreg_core._diff import spatial_gradient


def smooth_image(shape: tuple[int, ...], seed: int = 0, sigma: float = 2.0) -> torch.Tensor:
    """A smooth random image ``(1, 1, *shape)`` in float32."""
    rng = np.random.default_rng(seed)
    image = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return torch.from_numpy(image).float()[None, None]


def grid(shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """Voxel index coordinates, one tensor per axis."""
    return list(torch.meshgrid(*[torch.arange(n, dtype=dtype) for n in shape], indexing="ij"))


# ---------------------------------------------------------------------------------- similarity


def test_mse_hand_computed() -> None:
    a = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    b = torch.tensor([[[[1.0, 1.0], [0.0, 3.0]]]])
    assert float(L.mse(a, b)) == pytest.approx((1 + 0 + 4 + 0) / 4)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert float(L.mse(a, b, mask)) == pytest.approx((1 + 4) / 2)
    assert float(L.MSELoss()(a, b)) == pytest.approx(1.25)


@pytest.mark.parametrize("shape", [(16, 16), (8, 8, 8)])
def test_ncc_known_values(shape: tuple[int, ...]) -> None:
    x = smooth_image(shape)
    assert float(L.ncc(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(L.ncc(x, 2 * x + 3)) == pytest.approx(1.0, abs=1e-5)
    assert float(L.ncc(x, -x)) == pytest.approx(-1.0, abs=1e-5)
    assert float(L.NCCLoss()(x, -x)) == pytest.approx(2.0, abs=1e-5)


def test_ncc_matches_pearson_and_mask_restricts() -> None:
    a, b = smooth_image((20, 20), 1), smooth_image((20, 20), 2)
    expected = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
    assert float(L.ncc(a, b)) == pytest.approx(expected, abs=1e-5)
    # Identical inside the mask, unrelated outside: the masked NCC is 1.
    c = b.clone()
    c[..., :10, :] = 3 * a[..., :10, :] - 1
    mask = torch.zeros(1, 1, 20, 20)
    mask[..., :10, :] = 1
    assert float(L.ncc(a, c, mask)) == pytest.approx(1.0, abs=1e-5)
    assert float(L.ncc(a, c)) < 0.9


@pytest.mark.parametrize("shape", [(24, 24), (12, 12, 12)])
def test_box_filter_equals_scipy_uniform_filter_inside(shape: tuple[int, ...]) -> None:
    x = smooth_image(shape, 3).double()
    window = 5
    ours = L.box_filter(x, window)[0, 0].numpy()
    ref = ndi.uniform_filter(x[0, 0].numpy(), size=window, mode="constant")
    inner = tuple(slice(window // 2, n - window // 2) for n in shape)
    np.testing.assert_allclose(ours[inner], ref[inner], atol=1e-12)
    assert ours.shape == tuple(shape)
    # One width per axis, narrow boxes (shifted views) and wide ones (running sums) mixed.
    windows = (3, 9) if len(shape) == 2 else (3, 11, 7)
    assert min(windows) <= L.SHIFTED_BOX_MAX < max(windows)
    ours = L.box_filter(x, windows)[0, 0].numpy()
    ref = ndi.uniform_filter(x[0, 0].numpy(), size=windows, mode="constant")
    inner = tuple(slice(w // 2, n - w // 2) for w, n in zip(windows, shape))
    np.testing.assert_allclose(ours[inner], ref[inner], atol=1e-12)


def test_box_filter_narrow_and_wide_paths_agree_everywhere_and_in_gradient() -> None:
    """The shifted-views sum and the running sum are the same filter, borders and backward
    pass included (the border mean counts only voxels inside)."""
    x = smooth_image((15, 13, 11), 2).double().requires_grad_()
    weights = torch.rand(1, 1, 15, 13, 11, dtype=torch.float64)
    width = L.SHIFTED_BOX_MAX
    narrow = L.box_filter(x, width)
    (g_narrow,) = torch.autograd.grad((narrow * weights).sum(), x)
    old = L.SHIFTED_BOX_MAX
    try:
        L.SHIFTED_BOX_MAX = 1  # every box through the running sum
        wide = L.box_filter(x, width)
        (g_wide,) = torch.autograd.grad((wide * weights).sum(), x)
    finally:
        L.SHIFTED_BOX_MAX = old
    torch.testing.assert_close(narrow, wide, atol=1e-12, rtol=0)
    torch.testing.assert_close(g_narrow, g_wide, atol=1e-12, rtol=0)
    corner = x[0, 0, :4, :4, :4].detach().mean()  # a corner box holds 4 x 4 x 4 inside voxels
    assert float(narrow[0, 0, 0, 0, 0]) == pytest.approx(float(corner), abs=1e-12)


def test_reference_mutual_information_equals_the_full_computation() -> None:
    """Caching the fixed side of the histogram changes neither the value nor the gradient."""
    fixed = smooth_image((40, 30), 3)
    moving = (smooth_image((40, 30), 4) + fixed).requires_grad_()
    full = L.MutualInformationLoss(max_voxels=None)(fixed, moving)
    (g_full,) = torch.autograd.grad(full, moving)
    cached = L.ReferenceMutualInformation(fixed)
    value = cached(moving)
    (g_cached,) = torch.autograd.grad(value, moving)
    assert float(value) == pytest.approx(float(full), abs=1e-6)
    torch.testing.assert_close(g_cached, g_full, atol=1e-7, rtol=1e-4)
    assert float(cached(fixed)) == pytest.approx(float(-L.mutual_information(fixed, fixed)),
                                                 abs=1e-6)
    with pytest.raises(ValueError, match="expected shape"):
        cached(moving[..., :10])


def test_reference_mutual_information_on_a_voxel_subset_equals_the_plain_one() -> None:
    """With max_voxels the cached fixed side uses mutual_information's own subset: the same
    value to the last bit (the guard's scores depend on it), and less than every voxel's."""
    fixed = smooth_image((90, 80), 3)
    moving = smooth_image((90, 80), 4) + fixed
    cached = L.ReferenceMutualInformation(fixed, max_voxels=1000)
    assert float(cached(moving)) == float(-L.mutual_information(fixed, moving, max_voxels=1000))
    assert float(cached(moving)) != float(-L.mutual_information(fixed, moving, max_voxels=None))
    assert float(-cached(fixed)) == float(L.mutual_information(fixed, fixed, max_voxels=1000))
    for bad in (0, -5, True, 2.5):
        with pytest.raises(ValueError, match="max_voxels"):
            L.ReferenceMutualInformation(fixed, max_voxels=bad)


@pytest.mark.parametrize("shape, window", [((40, 30), 5), ((14, 12, 10), 5), ((20, 16), 9)])
def test_reference_local_ncc_equals_the_plain_loss_value_and_gradient(shape, window) -> None:
    """The refinement's cached local NCC: the fixed side filtered once gives the same loss and
    gradient as filtering all five maps per call; an image with itself scores 0 (NCC 1)."""
    fixed = smooth_image(shape, 3)
    moving = (smooth_image(shape, 4) + 0.5 * fixed).requires_grad_()
    plain = L.LocalNCCLoss(window)(fixed, moving)
    (g_plain,) = torch.autograd.grad(plain, moving)
    cached = L.ReferenceLocalNCC(fixed, window)
    value = cached(moving)
    (g_cached,) = torch.autograd.grad(value, moving)
    assert float(value) == pytest.approx(float(plain), abs=1e-6)
    assert 0.05 < float(value) < 1.0  # a real mismatch, not a trivial value
    torch.testing.assert_close(g_cached, g_plain, atol=1e-7, rtol=1e-4)
    assert float(cached(fixed)) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="expected shape"):
        cached(moving[..., :8])


@pytest.mark.parametrize("shape", [(32, 32), (12, 12, 12)])
def test_local_ncc_identity_and_local_affine_invariance(shape: tuple[int, ...]) -> None:
    a = smooth_image(shape, 4, sigma=1.0)
    assert float(L.local_ncc(a, a, window=5)) == pytest.approx(1.0, abs=1e-5)
    assert float(L.local_ncc(a, 2 * a + 3, window=5)) == pytest.approx(1.0, abs=1e-4)
    assert float(L.local_ncc(a, -a, window=5)) == pytest.approx(1.0, abs=1e-5)
    # A different affine intensity map on each half: exactly 1 wherever a window stays on one
    # side (the mask drops the columns whose window straddles the boundary) ...
    x = grid(shape, torch.float32)[-1]
    half = shape[-1] // 2
    piecewise = torch.where(x < half, 2 * a + 3, -0.5 * a + 1)
    away = ((x < half - 2) | (x >= half + 2)).to(a.dtype)[None, None]
    assert float(L.local_ncc(a, piecewise, window=5, mask=away)) == pytest.approx(1.0, abs=1e-4)
    assert float(L.ncc(a, piecewise)) < 0.3
    # ... and a slowly varying gain and offset (a bias field) barely changes it.
    ramp = x / shape[-1]
    biased = (1 + ramp) * a + 0.3 * ramp
    lncc_biased = float(L.local_ncc(a, biased, window=5))
    assert lncc_biased > 0.95
    assert lncc_biased > float(L.ncc(a, biased))
    assert float(L.local_ncc(a, smooth_image(shape, 5, sigma=1.0), window=5)) < 0.3
    assert float(L.LocalNCCLoss(5)(a, biased)) == pytest.approx(1 - lncc_biased, abs=1e-6)


def test_local_ncc_mask_selects_voxels() -> None:
    a, b = smooth_image((24, 24), 6, 1.0), smooth_image((24, 24), 7, 1.0)
    c = b.clone()
    c[..., :12, :] = a[..., :12, :]
    mask = torch.zeros(1, 1, 24, 24)
    mask[..., :8, :] = 1  # far enough from row 12 that windows see only copied voxels
    assert float(L.local_ncc(a, c, window=5, mask=mask)) == pytest.approx(1.0, abs=1e-5)
    assert float(L.local_ncc(a, c, window=5)) < 0.9


def _mi(a: torch.Tensor, b: torch.Tensor, **kwargs: object) -> float:
    return float(L.mutual_information(a, b, **kwargs))


def test_mutual_information_symmetric_and_dependent() -> None:
    a, b = smooth_image((48, 48), 8), smooth_image((48, 48), 9)
    assert _mi(a, b) == pytest.approx(_mi(b, a), rel=1e-4)
    generator = torch.Generator().manual_seed(1)
    shuffled = a.flatten()[torch.randperm(a.numel(), generator=generator)].view_as(a)
    assert _mi(a, a) > 10 * _mi(a, shuffled)
    # Invariant to affine intensity changes (min-max normalisation).
    assert _mi(a, 5 * a - 2) == pytest.approx(_mi(a, a), rel=1e-3)
    assert float(L.MutualInformationLoss()(a, a)) == pytest.approx(-_mi(a, a), rel=1e-6)


def test_mutual_information_peaks_at_zero_shift() -> None:
    big = smooth_image((80, 80), 10, sigma=3.0)
    a = big[..., 8:72, 8:72]
    values = {s: _mi(a, big[..., 8 + s : 72 + s, 8:72]) for s in (-6, -4, -2, -1, 0, 1, 2, 4, 6)}
    assert max(values, key=values.get) == 0
    assert values[1] < values[0] and values[2] < values[1] and values[4] < values[2]
    assert values[-1] < values[0] and values[-2] < values[-1] and values[-4] < values[-2]


def test_mutual_information_multimodal_non_monotonic_remap() -> None:
    a = smooth_image((64, 64), 11, sigma=3.0)
    normalised = (a - a.min()) / (a.max() - a.min())
    remapped = (normalised - 0.5) ** 2  # not monotonic: two intensities map to one
    generator = torch.Generator().manual_seed(2)
    shuffled = remapped.flatten()[torch.randperm(a.numel(), generator=generator)].view_as(a)
    assert _mi(a, remapped) > 0.5 * _mi(a, a)
    assert _mi(a, remapped) > 20 * _mi(a, shuffled)
    # A global NCC sees almost nothing of this dependence.
    assert abs(float(L.ncc(a, remapped))) < 0.5


def test_mutual_information_subsampling_and_mask() -> None:
    a = smooth_image((64, 64), 12, sigma=3.0)
    full = _mi(a, a**2, max_voxels=None)
    assert _mi(a, a**2, max_voxels=2048) == pytest.approx(full, rel=0.15)
    assert _mi(a, a**2, max_voxels=2048) == _mi(a, a**2, max_voxels=2048)  # deterministic
    noise = torch.rand(a.shape, generator=torch.Generator().manual_seed(3))
    b = torch.where(torch.arange(64)[:, None] < 32, a, noise)
    mask = torch.zeros_like(a)
    mask[..., :32, :] = 1
    assert _mi(a, b, mask=mask, max_voxels=1024) > 2 * _mi(a, b, max_voxels=1024)


# ---------------------------------------------------------------------------------------- dice


def test_soft_dice_identical_and_disjoint() -> None:
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, :4] = 1
    labels[:, 4:, 4:] = 2
    one_hot = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    assert float(L.soft_dice(one_hot, one_hot)) == pytest.approx(1.0)
    disjoint = torch.zeros(1, 1, 8, 8)
    other = torch.zeros(1, 1, 8, 8)
    disjoint[..., :4, :] = 1
    other[..., 4:, :] = 1
    assert float(L.soft_dice(disjoint, other)) == pytest.approx(0.0, abs=1e-6)
    # Half overlap: 2 * 16 / (32 + 32).
    shifted = torch.zeros(1, 1, 8, 8)
    shifted[..., 2:6, :] = 1
    assert float(L.soft_dice(disjoint, shifted)) == pytest.approx(0.5, abs=1e-6)
    assert float(L.DiceLoss()(disjoint, shifted)) == pytest.approx(0.5, abs=1e-6)


# ---------------------------------------------------------------------------------- regularisers


@pytest.mark.parametrize("ndim", [2, 3])
def test_diffusion_constant_and_linear_fields(ndim: int) -> None:
    shape = (9,) * ndim
    constant = torch.full((2, ndim, *shape), 1.5)
    assert float(L.diffusion(constant)) == 0.0
    A = torch.tensor([[0.1, -0.2, 0.3], [0.05, 0.4, -0.1], [0.2, 0.0, 0.3]], dtype=torch.float64)
    A = A[:ndim, :ndim]
    coords = torch.stack(grid(shape))
    u = torch.einsum("cd,d...->c...", A, coords)[None]
    assert float(L.diffusion(u)) == pytest.approx(float((A**2).sum()), rel=1e-10)
    spacing = (2.0, 0.5, 4.0)[:ndim]
    h = torch.tensor(spacing, dtype=torch.float64)
    expected = float(((A / h[None, :]) ** 2).sum())
    assert float(L.Diffusion(spacing)(u)) == pytest.approx(expected, rel=1e-10)


def test_bending_energy_affine_zero_and_quadratic_analytic() -> None:
    y, x = grid((10, 12))
    affine = torch.stack([0.3 * y - 0.2 * x + 1, 0.1 * y + 0.5 * x - 2])[None]
    assert float(L.bending_energy(affine)) == pytest.approx(0.0, abs=1e-20)
    a, b, c = 0.3, -0.2, 0.05
    quadratic = torch.stack([a * y**2, b * x * y + c * x**2])[None]
    expected = (2 * a) ** 2 + 2 * b**2 + (2 * c) ** 2
    assert float(L.bending_energy(quadratic)) == pytest.approx(expected, rel=1e-10)
    # With spacing: d2/dy2 of a y^2 over h_y^2.
    hy, hx = 2.0, 0.5
    expected = (2 * a / hy**2) ** 2 + 2 * (b / (hx * hy)) ** 2 + (2 * c / hx**2) ** 2
    assert float(L.BendingEnergy((hy, hx))(quadratic)) == pytest.approx(expected, rel=1e-10)


def test_bending_energy_3d_quadratic() -> None:
    z, y, x = grid((6, 7, 8))
    a, b = 0.4, -0.3
    u = torch.stack([a * z * x, b * y**2, torch.zeros_like(z)])[None]
    assert float(L.bending_energy(u)) == pytest.approx(2 * a**2 + (2 * b) ** 2, rel=1e-10)


def test_spatial_gradient_exact_for_linear_and_schemes_agree() -> None:
    y, x = grid((5, 7))
    image = (2 * y - 3 * x)[None, None]
    for scheme in ("central", "forward", "backward"):
        g = spatial_gradient(image, spacing=(2.0, 1.5), scheme=scheme)
        assert g.shape == (1, 1, 2, 5, 7)
        torch.testing.assert_close(g[0, 0, 0], torch.full((5, 7), 1.0, dtype=torch.float64))
        torch.testing.assert_close(g[0, 0, 1], torch.full((5, 7), -2.0, dtype=torch.float64))


# ------------------------------------------------------------------------------------ gradcheck


def _double(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator, dtype=torch.float64).requires_grad_()


def test_gradcheck_similarities() -> None:
    a, b = _double((1, 1, 5, 6), 0), _double((1, 1, 5, 6), 1)
    assert torch.autograd.gradcheck(lambda p, q: L.ncc(p, q), (a, b))
    assert torch.autograd.gradcheck(lambda p, q: L.local_ncc(p, q, window=3), (a, b))
    a3, b3 = _double((1, 1, 3, 4, 4), 2), _double((1, 1, 3, 4, 4), 3)
    assert torch.autograd.gradcheck(lambda p, q: L.local_ncc(p, q, window=3), (a3, b3))


def test_gradcheck_mutual_information() -> None:
    # Values in (0.2, 0.8) padded with 0 and one 1: the detached min and max stay fixed
    # under the finite-difference perturbations, so the analytic gradient is the whole one.
    def embed(inner: torch.Tensor) -> torch.Tensor:
        corner = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
        corner[..., 0, 0] = 1.0
        return F.pad(inner, (1, 1, 1, 1)) + corner

    a = (0.2 + 0.6 * _double((1, 1, 5, 5), 4)).detach().requires_grad_()
    b = (0.2 + 0.6 * _double((1, 1, 5, 5), 5)).detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p, q: L.mutual_information(embed(p), embed(q), bins=8), (a, b)
    )


def test_gradcheck_regularisers() -> None:
    u2, u3 = _double((1, 2, 5, 4), 6), _double((1, 3, 3, 4, 4), 7)
    for fn in (L.diffusion, L.bending_energy):
        assert torch.autograd.gradcheck(fn, (u2,))
        assert torch.autograd.gradcheck(lambda v, fn=fn: fn(v, (2.0, 1.0, 0.5)), (u3,))


# --------------------------------------------------------------------------------- bad inputs


def test_similarity_bad_inputs() -> None:
    a = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"same shape.*\(1, 1, 8, 8\).*\(1, 1, 8, 9\)"):
        L.ncc(a, torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match="same shape"):
        L.mse(a, torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"expected shape \(B, C, H, W\).*\(8, 8\)"):
        L.local_ncc(torch.rand(8, 8), torch.rand(8, 8))
    with_nan = a.clone()
    with_nan[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="b: expected finite values, got 1 NaN"):
        L.mutual_information(a, with_nan)
    with pytest.raises(ValueError, match="non-empty"):
        L.mse(torch.rand(1, 1, 0, 8), torch.rand(1, 1, 0, 8))
    with pytest.raises(TypeError, match="floating-point tensor, got dtype torch.int64"):
        L.ncc(torch.ones(1, 1, 8, 8, dtype=torch.long), a)
    with pytest.raises(TypeError, match="expected a torch.Tensor, got ndarray"):
        L.mse(np.zeros((1, 1, 8, 8)), a)
    with pytest.raises(ValueError, match="window: expected an odd positive int.*got 4"):
        L.local_ncc(a, a, window=4)
    with pytest.raises(ValueError, match=r"window: .*2 of them.*\(3, 3, 3\)"):
        L.local_ncc(a, a, window=(3, 3, 3))
    with pytest.raises(ValueError, match="window"):
        L.LocalNCCLoss(window=0)
    with pytest.raises(ValueError, match="bins: expected an int >= 2, got 1"):
        L.mutual_information(a, a, bins=1)
    with pytest.raises(ValueError, match="bins"):
        L.MutualInformationLoss(bins=2.5)
    with pytest.raises(ValueError, match="sigma: expected a positive"):
        L.mutual_information(a, a, sigma=0.0)
    with pytest.raises(ValueError, match="max_voxels"):
        L.mutual_information(a, a, max_voxels=0)


def test_mask_and_field_bad_inputs() -> None:
    a = torch.rand(2, 1, 8, 8)
    expected = r"mask: expected shape \(B, 1, \*spatial\) = \(2, 1, 8, 8\)"
    with pytest.raises(ValueError, match=expected):
        L.mse(a, a, mask=torch.ones(1, 1, 8, 7))
    with pytest.raises(ValueError, match="mask: expected shape"):
        L.ncc(a, a, mask=torch.ones(3, 1, 8, 8))
    empty = torch.ones(2, 1, 8, 8)
    empty[1] = 0
    with pytest.raises(ValueError, match=r"at least one selected voxel.*batch item\(s\) \[1\]"):
        L.local_ncc(a, a, mask=empty)
    with pytest.raises(ValueError, match=">= 0"):
        L.mse(a, a, mask=-torch.ones(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"one channel per spatial axis.*\(1, 3, 8, 8\)"):
        L.diffusion(torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        L.bending_energy(torch.zeros(1, 2, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="spacing: expected 2 positive values"):
        L.diffusion(torch.zeros(1, 2, 8, 8), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing: expected 3 positive values"):
        L.BendingEnergy((1.0, 0.0, 1.0))(torch.zeros(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match="scheme: expected one of"):
        spatial_gradient(a, scheme="upwind")


def test_get_similarity() -> None:
    assert isinstance(L.get_similarity("mse"), L.MSELoss)
    assert isinstance(L.get_similarity("NCC"), L.NCCLoss)
    lncc = L.get_similarity("lncc", window=5)
    assert isinstance(lncc, L.LocalNCCLoss) and lncc.window == 5
    assert L.get_similarity("mi", bins=16).bins == 16
    x = smooth_image((16, 16))
    assert float(L.get_similarity("lncc", window=3)(x, x)) == pytest.approx(0.0, abs=1e-5)
    expected = r"expected one of \['lncc', 'mi', 'mse', 'ncc'\], got 'ssd'"
    with pytest.raises(ValueError, match=expected):
        L.get_similarity("ssd")


@pytest.mark.parametrize(
    "padding_mode,scipy_mode", [("replicate", "nearest"), ("zeros", "constant")]
)
@pytest.mark.parametrize("shape", [(2, 3, 11, 9, 7), (1, 2, 13, 6)])
def test_conv_along_axis_equals_scipy_correlate1d(shape, padding_mode, scipy_mode) -> None:
    from deepreg_core._diff import conv_along_axis, gaussian_kernel

    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    kernel = gaussian_kernel(1.3) * torch.linspace(0.5, 1.5, 9)  # asymmetric on purpose
    for axis in range(len(shape) - 2):
        got = conv_along_axis(x, kernel, axis, padding_mode=padding_mode)
        want = ndi.correlate1d(x.numpy(), kernel.numpy(), axis=axis + 2, mode=scipy_mode)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_mutual_information_subsample_is_fixed_and_close_to_all_voxels() -> None:
    a = smooth_image((64, 64, 48), seed=3)
    b = a.square() + 0.05 * smooth_image((64, 64, 48), seed=4)
    first = L.mutual_information(a, b, max_voxels=65536)
    assert float(first) == float(L.mutual_information(a, b, max_voxels=65536))
    everything = L.mutual_information(a, b, max_voxels=None)
    assert float(first) == pytest.approx(float(everything), rel=0.02)

