"""Joint saliency: shared structure scores high, structure in one image only scores low."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deepreg_core.saliency import joint_saliency, structure_tensor


def squares(n: int, boxes: list[tuple[int, int]], ndim: int = 2) -> torch.Tensor:
    """``(1, 1, n, ..., n)`` image, 1 inside the axis-aligned cubes ``[lo, hi)^ndim``."""
    image = torch.zeros((1, 1) + (n,) * ndim)
    for lo, hi in boxes:
        image[(..., *([slice(lo, hi)] * ndim))] = 1.0
    return image


def edge_band(n: int, lo: int, hi: int, width: int = 2) -> torch.Tensor:
    """Boolean ``(n, n)`` band of +-width voxels around the outline of the square [lo, hi)."""
    band = torch.zeros(n, n, dtype=torch.bool)
    band[lo - width : hi + width, lo - width : hi + width] = True
    band[lo + width : hi - width, lo + width : hi - width] = False
    return band


def test_structure_tensor_of_a_linear_ramp() -> None:
    y, x = torch.meshgrid(torch.arange(10.0), torch.arange(12.0), indexing="ij")
    ramp = (2 * y - 3 * x)[None, None]
    t = structure_tensor(ramp, sigma=1.5)
    assert t.shape == (1, 2, 2, 10, 12)
    expected = torch.tensor([[4.0, -6.0], [-6.0, 9.0]])  # grad grad^T with grad = (2, -3)
    torch.testing.assert_close(t[0].permute(2, 3, 0, 1), expected.expand(10, 12, 2, 2))
    # 3D, two channels: the channels' tensors add up.
    z, y, x = torch.meshgrid(*[torch.arange(6.0)] * 3, indexing="ij")
    t3 = structure_tensor(torch.stack([z, 2 * x])[None], sigma=1.0)
    torch.testing.assert_close(t3[0, :, :, 3, 3, 3], torch.diag(torch.tensor([1.0, 0.0, 4.0])))


def test_shared_edges_high_and_unshared_structure_low() -> None:
    n = 48
    fixed = squares(n, [(8, 20), (28, 40)])
    moving = 1.0 - squares(n, [(8, 20)])  # first square, inverted contrast; second one missing
    js = joint_saliency(fixed, moving)[0, 0]
    shared = float(js[edge_band(n, 8, 20)].mean())
    unshared = float(js[edge_band(n, 28, 40)].mean())
    assert shared > 0.5
    assert unshared < 0.01
    # Symmetric in its two images.
    torch.testing.assert_close(joint_saliency(moving, fixed)[0, 0], js)


def test_orthogonal_structures_disagree() -> None:
    # Both images are salient everywhere, but the stripes cross at right angles.
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    vertical = torch.sin(x * 0.8)[None, None]
    horizontal = torch.sin(y * 0.8)[None, None]
    crossed = joint_saliency(vertical, horizontal)
    same = joint_saliency(vertical, -vertical)
    assert float(crossed.mean()) < 0.01
    assert float(same.mean()) > 0.5


def test_3d_shared_cube() -> None:
    fixed = squares(24, [(4, 20)], ndim=3)
    js = joint_saliency(fixed, 2.0 - 3.0 * fixed)
    assert js.shape == (1, 1, 24, 24, 24)
    assert float(js[0, 0, 12, 12, 3:5].mean()) > 0.5  # a face of the cube
    assert float(js[0, 0, 12, 12, 11:13].max()) < 0.01  # its flat inside
    assert float(joint_saliency(fixed, torch.zeros_like(fixed)).max()) == 0.0


def test_range_and_flat_images() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(2, 1, 24, 24, generator=generator)
    b = torch.rand(2, 3, 24, 24, generator=generator)  # channel counts may differ
    js = joint_saliency(a, b, sigma=1.0)
    assert js.shape == (2, 1, 24, 24)
    assert float(js.min()) >= 0.0 and float(js.max()) <= 1.0
    flat = torch.full((1, 1, 16, 16), 3.0)
    assert float(joint_saliency(flat, flat).abs().max()) < 1e-6


def test_gradcheck_joint_saliency() -> None:
    # The detached quantile scale must not move under the finite-difference perturbations:
    # a fixed strong edge (columns 13-14) far from the varying block (columns 0-5) sets it.
    def embed(inner: torch.Tensor) -> torch.Tensor:
        anchor = torch.zeros(1, 1, 6, 18, dtype=torch.float64)
        anchor[..., 14:] = 20.0
        return F.pad(inner, (0, 12)) + anchor

    generator = torch.Generator().manual_seed(1)
    f = torch.rand(1, 1, 6, 6, generator=generator, dtype=torch.float64).requires_grad_()
    m = torch.rand(1, 1, 6, 6, generator=generator, dtype=torch.float64).requires_grad_()
    js = joint_saliency(embed(f), embed(m), sigma=0.7)
    assert float(js.detach()[..., :6].max()) > 1e-3  # the checked voxels are not all clamped to 0
    assert torch.autograd.gradcheck(
        lambda p, q: joint_saliency(embed(p), embed(q), sigma=0.7), (f, m)
    )


def test_bad_inputs() -> None:
    a = torch.rand(1, 1, 16, 16)
    expected = r"same batch size and spatial shape.*\(1, 1, 16, 16\).*\(1, 1, 16, 15\)"
    with pytest.raises(ValueError, match=expected):
        joint_saliency(a, torch.rand(1, 1, 16, 15))
    with pytest.raises(ValueError, match="same batch size"):
        joint_saliency(a, torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="same batch size"):
        joint_saliency(a, torch.rand(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="sigma: expected a finite number >= 0"):
        joint_saliency(a, a, sigma=-1.0)
    with pytest.raises(ValueError, match="quantile: expected a number in"):
        joint_saliency(a, a, quantile=0.0)
    nan = a.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="moving: expected finite values"):
        joint_saliency(a, nan)
    with pytest.raises(TypeError, match="fixed: expected a floating-point tensor"):
        joint_saliency(torch.ones(1, 1, 16, 16, dtype=torch.uint8), a)
    with pytest.raises(ValueError, match="non-empty"):
        structure_tensor(torch.zeros(1, 1, 0, 16))
    with pytest.raises(ValueError, match=r"expected shape \(B, C, H, W\)"):
        structure_tensor(torch.zeros(16, 16))
