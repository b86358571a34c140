"""Metrics against known truth: hand-counted overlaps, analytic Jacobians, constructed folds."""

from __future__ import annotations

import math

import pytest
import torch

from deepreg_core import metrics as M
from deepreg_core._diff import axis_difference


def grid(shape: tuple[int, ...]) -> torch.Tensor:
    """Voxel coordinates ``(ndim, *shape)`` in float64."""
    axes = [torch.arange(n, dtype=torch.float64) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def linear_field(matrix: torch.Tensor, shape: tuple[int, ...], spacing=None) -> torch.Tensor:
    """``u(x) = (M - I) x`` in physical units, ``x`` the physical position (index * spacing)."""
    ndim = len(shape)
    h = torch.ones(ndim, dtype=torch.float64) if spacing is None else torch.tensor(spacing)
    x = grid(shape) * h.view(ndim, *([1] * ndim))
    return torch.einsum("cd,d...->c...", matrix - torch.eye(ndim, dtype=torch.float64), x)[None]


# ---------------------------------------------------------------------------------------- dice


def test_dice_per_label_hand_case() -> None:
    a = torch.tensor([[0, 1, 1, 3], [2, 2, 0, 0]])
    b = torch.tensor([[0, 1, 0, 0], [2, 2, 2, 0]])
    scores = M.dice_per_label(a, b)
    assert list(scores) == [1, 2, 3]
    assert scores[1] == pytest.approx(2 * 1 / (2 + 1))
    assert scores[2] == pytest.approx(2 * 2 / (2 + 3))
    assert scores[3] == 0.0  # only in a
    assert M.mean_dice(a, b) == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)
    # Requested labels: absent from both maps -> nan, skipped by mean_dice.
    chosen = M.dice_per_label(a, b, labels=[2, 7])
    assert chosen[2] == pytest.approx(0.8) and math.isnan(chosen[7])
    assert M.mean_dice(a, b, labels=[2, 7]) == pytest.approx(0.8)
    background = torch.zeros(3, 3, dtype=torch.long)
    assert math.isnan(M.mean_dice(background, background))
    # Batched (B, 1, *spatial) maps pool the batch items.
    batched = M.dice_per_label(torch.stack([a, a])[:, None], torch.stack([b, a])[:, None])
    assert batched[1] == pytest.approx(2 * (1 + 2) / (4 + 3))


def test_dice_bad_inputs() -> None:
    a = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(TypeError, match=r"integer \(or bool\) label tensor, got dtype torch.float"):
        M.dice_per_label(a.float(), a)
    with pytest.raises(ValueError, match=r"same shape, got \(4, 4\) and \(4, 5\)"):
        M.dice_per_label(a, torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty"):
        M.mean_dice(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        M.dice_per_label([[0, 1]], a)


# ------------------------------------------------------------------------------- TRE and EPE


def test_target_registration_error_anisotropic() -> None:
    a = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    b = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [5.0, 5.5, 5.0]])
    tre = M.target_registration_error(a, b, spacing=(2.0, 3.0, 6.0))
    torch.testing.assert_close(tre, torch.tensor([7.0, 0.0, 1.5]))  # sqrt(4 + 9 + 36) = 7
    torch.testing.assert_close(M.target_registration_error(a, b)[0], torch.tensor(math.sqrt(3)))


def test_tre_bad_inputs() -> None:
    p = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"same shape \(N, ndim\), got \(4, 3\) and \(5, 3\)"):
        M.target_registration_error(p, torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"expected shape \(N, 2\) or \(N, 3\).*\(4, 4\)"):
        M.target_registration_error(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="spacing: expected 3 positive values"):
        M.target_registration_error(p, p, spacing=(1.0, 1.0))
    with pytest.raises(TypeError, match="floating-point"):
        M.target_registration_error(p.long(), p.long())
    with pytest.raises(ValueError, match="NaN"):
        M.target_registration_error(p, torch.full((4, 3), float("nan")))
    with pytest.raises(ValueError, match="non-empty"):
        M.target_registration_error(torch.zeros(0, 3), torch.zeros(0, 3))


def test_endpoint_error() -> None:
    generator = torch.Generator().manual_seed(0)
    u_true = torch.randn(2, 2, 6, 7, generator=generator)
    u_est = u_true.clone()
    u_est[:, 0] += 1.0
    u_est[:, 1] += 1.0
    assert M.endpoint_error(u_est, u_true) == pytest.approx(math.sqrt(2), rel=1e-6)
    assert M.endpoint_error(u_est, u_true, spacing=(3.0, 4.0)) == pytest.approx(5.0, rel=1e-6)
    # Mask: a large error outside the mask does not count.
    u_est[:, :, :, 4:] += 100.0
    mask = torch.zeros(1, 1, 6, 7)
    mask[..., :4] = 1
    assert M.endpoint_error(u_est, u_true, (3.0, 4.0), mask) == pytest.approx(5.0, rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        M.endpoint_error(u_est, u_true[..., :6])
    with pytest.raises(ValueError, match="one channel per spatial axis"):
        M.endpoint_error(u_est[:, :1], u_true[:, :1])


# ------------------------------------------------------------------------------------ Jacobian


@pytest.mark.parametrize("scheme", ["central", "forward", "backward", "all"])
def test_jacobian_of_uniform_scale_is_s_to_the_ndim(scheme: str) -> None:
    s = 1.3
    for shape, spacing in [((6, 7), (2.0, 0.5)), ((5, 6, 7), (2.0, 0.5, 1.25))]:
        ndim = len(shape)
        matrix = s * torch.eye(ndim, dtype=torch.float64)
        # Field in voxels, and the same transform as a physical field with anisotropic spacing.
        det = M.jacobian_determinant(linear_field(matrix, shape), scheme=scheme)
        assert det.shape == (1, 1, *shape)
        torch.testing.assert_close(det, torch.full_like(det, s**ndim))
        physical = linear_field(matrix, shape, spacing)
        det = M.jacobian_determinant(physical, spacing=spacing, scheme=scheme)
        torch.testing.assert_close(det, torch.full_like(det, s**ndim))


def test_jacobian_of_rotation_is_one() -> None:
    t = 0.4
    c, s = math.cos(t), math.sin(t)
    rot2 = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    rot3 = torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64) @ torch.tensor(
        [[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64
    )
    for matrix, shape in [(rot2, (8, 9)), (rot3, (5, 6, 7))]:
        for scheme in ("central", "all"):
            det = M.jacobian_determinant(linear_field(matrix, shape), scheme=scheme)
            torch.testing.assert_close(det, torch.ones_like(det))


def zigzag_field() -> torch.Tensor:
    """Columns 3..6 swap places in pairs along x (u_x = +1, -1, +1, -1); zero elsewhere."""
    u = torch.zeros(1, 2, 6, 12, dtype=torch.float64)
    u[0, 1, :, 3:7] = torch.tensor([1.0, -1.0, 1.0, -1.0])
    return u


def test_zigzag_fold_is_caught_by_all_but_missed_by_central() -> None:
    u = zigzag_field()
    central = M.jacobian_determinant(u, scheme="central")
    every = M.jacobian_determinant(u, scheme="all")
    assert bool((central > 0).all())  # central differences see no fold at all
    assert bool((every[..., 3:7] <= 0).all())  # every swapped voxel is caught
    assert bool((every[..., :2] > 0).all()) and bool((every[..., 8:] > 0).all())
    # "all" is the minimum of the one-sided stencils, so never above either of them.
    assert bool((every <= M.jacobian_determinant(u, scheme="forward")).all())
    assert bool((every <= M.jacobian_determinant(u, scheme="backward")).all())
    assert M.folding_fraction(u) == pytest.approx(4 * 6 / (6 * 12))
    mask = torch.zeros(1, 1, 6, 12)
    mask[..., 8:] = 1
    assert M.folding_fraction(u, mask=mask) == 0.0


def _one_sided_reference(u: torch.Tensor) -> torch.Tensor:
    """Minimum over all 2**ndim forward/backward combinations, each det by numpy."""
    import itertools

    import numpy as np

    ndim = u.dim() - 2
    diffs = {}
    for d in range(ndim):
        for s in ("forward", "backward"):
            diffs[d, s] = axis_difference(u, d, scheme=s).numpy()
    best = None
    for combo in itertools.product(("forward", "backward"), repeat=ndim):
        J = np.stack([diffs[d, s] for d, s in enumerate(combo)], axis=2)  # (B, c, d, ...)
        J = np.moveaxis(J, (1, 2), (-2, -1)) + np.eye(ndim)
        det = np.linalg.det(J)[:, None]
        best = det if best is None else np.minimum(best, det)
    return torch.from_numpy(best)


@pytest.mark.parametrize(
    "shape", [(2, 3, 7, 5, 6), (1, 2, 9, 4), (1, 3, 2, 5, 5), (1, 3, 13, 4, 3)]
)
def test_one_pass_jacobian_equals_every_stencil_whatever_the_slab_size(shape, monkeypatch) -> None:
    """The slab-wise pass (with halo) equals the whole-volume stencils, slabs of 1 row or all."""
    u = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    reference_worst = _one_sided_reference(u)
    for slab in (1, 7, 1 << 19):
        monkeypatch.setattr(M, "SLAB_VOXELS", slab)
        central, worst = M.jacobian_and_worst(u)
        torch.testing.assert_close(worst, reference_worst)
        torch.testing.assert_close(worst, M.jacobian_determinant(u, scheme="all"))
        torch.testing.assert_close(central, M.jacobian_determinant(u, scheme="central"))


def test_one_pass_jacobian_of_scale_and_fold() -> None:
    s = 1.5
    central, worst = M.jacobian_and_worst((s - 1.0) * grid((6, 7, 8))[None])
    torch.testing.assert_close(central, torch.full_like(central, s**3))
    torch.testing.assert_close(worst, torch.full_like(worst, s**3))
    central, worst = M.jacobian_and_worst(zigzag_field())
    assert bool((central > 0).all()) and bool((worst[..., 3:7] <= 0).all())


def test_jacobian_determinant_keeps_its_gradient() -> None:
    u = (0.1 * torch.randn(1, 3, 5, 6, 7, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: M.jacobian_determinant(v).sum(), (u,))


def test_folding_fraction_of_smooth_small_field_is_zero() -> None:
    x = grid((10, 10, 10))
    u = 0.5 * torch.stack([torch.sin(x[2] / 3), torch.cos(x[0] / 4), torch.sin(x[1] / 5)])[None]
    assert M.folding_fraction(u) == 0.0
    assert M.folding_fraction(u, spacing=(1.0, 2.0, 1.0)) == 0.0


def test_std_log_jacobian() -> None:
    assert M.std_log_jacobian(torch.zeros(1, 3, 5, 5, 5)) == 0.0
    scaled = linear_field(1.2 * torch.eye(2, dtype=torch.float64), (8, 8))
    assert M.std_log_jacobian(scaled) == pytest.approx(0.0, abs=1e-12)
    # Two halves with determinants 1 and e**2 (u_x = (e**2 - 1) x on the right, with a jump
    # that the mask leaves out): log det is 0 and 2, std 1.
    u = torch.zeros(1, 2, 4, 20, dtype=torch.float64)
    x = torch.arange(20, dtype=torch.float64)
    u[0, 1, :, 10:] = (math.e**2 - 1) * x[10:]
    mask = torch.ones(1, 1, 4, 20)
    mask[..., 9:11] = 0
    assert M.std_log_jacobian(u, mask=mask) == pytest.approx(1.0, rel=1e-9)


def test_jacobian_bad_inputs() -> None:
    u = torch.zeros(1, 2, 6, 6)
    expected = r"scheme: expected one of \('central', 'forward', 'backward', 'all'\), got 'sobel'"
    with pytest.raises(ValueError, match=expected):
        M.jacobian_determinant(u, scheme="sobel")
    with pytest.raises(ValueError, match=r"one channel per spatial axis\), got \(1, 3, 6, 6\)"):
        M.jacobian_determinant(torch.zeros(1, 3, 6, 6))
    with pytest.raises(ValueError, match="spacing: expected 2 positive values"):
        M.folding_fraction(u, spacing=(1.0, -1.0))
    with pytest.raises(ValueError, match="mask: expected shape"):
        M.std_log_jacobian(u, mask=torch.ones(1, 1, 6, 5))
    with pytest.raises(ValueError, match="NaN"):
        M.folding_fraction(torch.full((1, 2, 4, 4), float("nan")))
    with pytest.raises(TypeError, match="floating-point"):
        M.jacobian_determinant(u.long())
    with pytest.raises(ValueError, match="non-empty"):
        M.jacobian_determinant(torch.zeros(1, 2, 0, 4))
