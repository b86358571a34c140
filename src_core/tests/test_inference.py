"""register(): known transforms recovered, geometry kept, bad input refused, cancel honoured."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepreg_core import metrics, synth
from deepreg_core.events import Finished, Progress, Started, Stopped, StopToken
from deepreg_core.image import Image
from deepreg_core.inference import apply_transform, register, register_iter
from deepreg_core.models import ModelConfig, build_model


def _net(ndim=2, kind="deformable"):
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, ndim=ndim, features=[8, 16, 16]))


def _pair(shape=(64, 64), seed=3, **kw):
    pair = synth.synthetic_pair(shape, seed, same_contrast=True, velocity_std=2.0, max_bias=0.0,
                                max_noise=0.01, **kw)
    fixed = Image.from_array(pair.fixed[0, 0].numpy(), spacing=(1.5,) * len(shape))
    moving = Image.from_array(pair.moving[0, 0].numpy(), spacing=(1.5,) * len(shape))
    labels = [Image.from_array(t[0, 0].numpy().astype(np.int32), spacing=(1.5,) * len(shape))
              for t in (pair.fixed_labels, pair.moving_labels)]
    return fixed, moving, labels, pair.displacement[0].numpy()


def test_identical_pair_gives_near_zero_field_and_ncc_one():
    fixed, _, _, _ = _pair()
    result = register(fixed, fixed, model=_net())
    assert np.abs(result.displacement).max() < 0.05
    assert result.metrics["ncc_after"] == pytest.approx(1.0, abs=1e-3)
    assert result.warped.shape == fixed.shape
    np.testing.assert_allclose(result.warped.affine, fixed.affine)


def test_refinement_recovers_a_known_deformation():
    fixed, moving, (fl, ml), truth = _pair()
    result = register(fixed, moving, model=_net(), refine_steps=60, refine_affine=False,
                      similarity="lncc", fixed_labels=fl, moving_labels=ml)
    inner = (slice(None), slice(8, -8), slice(8, -8))  # the border has no information
    before = np.linalg.norm(truth[inner], axis=0).mean()
    after = np.linalg.norm((result.displacement - truth)[inner], axis=0).mean()
    assert after < 0.5 * before
    assert result.metrics["dice_after"] > result.metrics["dice_before"]
    assert result.metrics["ncc_after"] > result.metrics["ncc_before"]
    assert result.folding_fraction < 1e-3
    assert result.warped_labels.data.dtype == np.int32
    np.testing.assert_allclose(result.displacement_mm, result.displacement * 1.5, rtol=1e-6)


def test_result_lives_on_the_fixed_grid_when_geometries_differ():
    fixed, moving, _, _ = _pair(shape=(48, 40))
    coarse = Image(moving.data[::2, ::2].copy(), np.diag([3.0, 3.0, 1.0]))
    result = register(fixed, coarse, model=_net())
    assert result.displacement.shape == (2, 48, 40)
    assert result.jacobian.shape == result.saliency.shape == fixed.shape
    assert 0.0 <= result.saliency.min() and result.saliency.max() <= 1.0


def test_events_come_in_order_and_stop_is_honoured():
    fixed, moving, _, _ = _pair(shape=(32, 32))
    events = list(register_iter(fixed, moving, model=_net(), refine_steps=5))
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == sorted(steps) and steps[-1] == events[0].total_steps
    token = StopToken()
    out = []
    for event in register_iter(fixed, moving, model=_net(), refine_steps=50, stop=token):
        out.append(event)
        if isinstance(event, Progress) and event.step >= 3:
            token.stop()
    assert isinstance(out[-1], Stopped) and not any(isinstance(e, Finished) for e in out)


def test_same_input_gives_the_same_output():
    fixed, moving, _, _ = _pair(shape=(32, 32))
    a = register(fixed, moving, model=_net(), refine_steps=10, seed=7)
    b = register(fixed, moving, model=_net(), refine_steps=10, seed=7)
    np.testing.assert_array_equal(a.displacement, b.displacement)
    assert a.seed == 7


def test_points_give_tre_and_move_with_a_known_shift():
    data = np.zeros((40, 40), np.float32)
    data[10:25, 12:30] = 1.0
    fixed = Image.from_array(data, spacing=(2.0, 2.0))
    moving = Image.from_array(np.roll(data, (3, -2), axis=(0, 1)), spacing=(2.0, 2.0))
    pts_f = np.array([[10.0, 12.0], [24.0, 29.0], [15.0, 20.0]])
    pts_m = pts_f + [3.0, -2.0]
    net = build_model(ModelConfig(kind="affine", ndim=2, affine_features=[8, 16]))
    result = register(fixed, moving, model=net, refine_steps=120, similarity="mse",
                      regularization=0.01, fixed_points=pts_f, moving_points=pts_m)
    assert result.metrics["tre_before_mm"] == pytest.approx(np.hypot(3, 2) * 2.0, rel=1e-5)
    assert result.metrics["tre_after_mm"] < 0.35 * result.metrics["tre_before_mm"]
    assert np.abs(result.warped_points - pts_f).mean() < 1.0


def test_apply_transform_keeps_label_dtype_and_matches_result():
    fixed, moving, (fl, ml), _ = _pair(shape=(32, 32))
    result = register(fixed, moving, model=_net(), refine_steps=5, moving_labels=ml)
    moved = apply_transform(result, ml, mode="nearest")
    assert moved.data.dtype == ml.data.dtype
    np.testing.assert_array_equal(moved.data, result.warped_labels.data)
    assert set(np.unique(moved.data)) <= set(np.unique(ml.data))


def test_jacobian_of_the_result_matches_metrics():
    fixed, moving, _, _ = _pair(shape=(32, 32))
    result = register(fixed, moving, model=_net(), refine_steps=5)
    u = torch.from_numpy(result.displacement)[None]
    expected = metrics.jacobian_determinant(u)[0, 0].numpy()
    np.testing.assert_allclose(result.jacobian, expected, atol=1e-5)


@pytest.mark.parametrize(
    "case, match",
    [
        ("ndim", "same dimensionality"),
        ("nan", "finite values"),
        ("type", "expected a deepreg_core.image.Image"),
        ("steps", "refine_steps"),
        ("tiny", "at least 2 voxels"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(case, match):
    fixed, moving, _, _ = _pair(shape=(16, 16))
    kwargs = {}
    if case == "ndim":
        moving = Image.from_array(np.zeros((8, 8, 8), np.float32))
    elif case == "nan":
        data = moving.data.copy()
        data[3, 3] = np.nan
        moving = moving.with_data(data)
    elif case == "type":
        moving = moving.data
    elif case == "steps":
        kwargs["refine_steps"] = -1
    elif case == "tiny":
        moving = Image.from_array(np.zeros((1, 8), np.float32))
    with pytest.raises((ValueError, TypeError), match=match):
        register(fixed, moving, model=_net(), **kwargs)


def test_model_of_the_wrong_dimensionality_is_refused(model_folder):
    volume = Image.from_array(np.random.default_rng(0).random((16, 16, 16), np.float32))
    with pytest.raises(ValueError, match="registers 2D images but the pair is 3D"):
        register(volume, volume, model=str(model_folder))


# ----------------------------------------------------------------------------- physical frame


def test_affine_networks_see_the_scan_in_its_true_proportions():
    """A slab scan (anisotropic voxels, 12 slices) is padded into an isotropic frame: a ball in
    millimetres stays a ball on the network's grid instead of being stretched to fill it."""
    from deepreg_core.inference import _in_frame, _physical_frame

    shape, spacing, work = (60, 50, 12), (1.0, 1.2, 2.0), (32, 32, 32)
    frame = _physical_frame(shape, spacing, work)
    mm = np.diag(frame)[:3] * np.asarray(spacing)
    np.testing.assert_allclose(mm, mm[0])  # isotropic work voxels
    corners = np.array([[i, j, k, 1.0] for i in (0, 31) for j in (0, 31) for k in (0, 31)])
    inside = (np.linalg.inv(frame) @ np.array([[0, 0, 0, 1.0], [59, 49, 11, 1.0]]).T)[:3]
    assert (inside >= -1e-9).all() and (inside <= 31 + 1e-9).all()  # the whole scan fits
    assert (frame @ corners.T)[2].min() < 0  # and the short axis is padded, not stretched
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)],
                                indexing="ij"))
    centre = np.array([30.0, 30.0, 11.0])  # mm
    ball = (np.linalg.norm(grid - centre[:, None, None, None], axis=0) < 9.0).astype(np.float32)
    seen = _in_frame(torch.from_numpy(ball)[None, None], frame, work)[0, 0].numpy() > 0.5
    extents = [np.ptp(np.nonzero(seen)[a]) + 1 for a in range(3)]
    assert max(extents) - min(extents) <= 2, extents  # round in the frame (2 mm slices)
    stretched = torch.nn.functional.interpolate(torch.from_numpy(ball)[None, None], size=work,
                                                mode="trilinear")[0, 0].numpy() > 0.5
    squashed = [np.ptp(np.nonzero(stretched)[a]) + 1 for a in range(3)]
    assert max(squashed) > 2 * min(squashed), squashed  # what a plain resize would show


def test_an_affine_found_in_the_frame_is_the_same_motion_on_the_scan():
    """Conjugating by the frame is exact: warping on the frame then sampling equals sampling the
    scan warped by the converted matrix."""
    from deepreg_core import spatial
    from deepreg_core.inference import _in_frame, _physical_frame

    shape, spacing, work = (40, 36, 20), (1.0, 1.0, 2.0), (24, 24, 24)
    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.avg_pool3d(torch.rand(1, 1, *shape, generator=g), 5, 1, 2)
    frame = _physical_frame(shape, spacing, work)
    motion = np.eye(4)
    motion[:3, :3] = synth.random_affine(work, 3, rotation=10, scale=0.05, shear=0.0,
                                         translation=0.0)[:3, :3].numpy()
    motion[:3, 3] = [1.5, -1.0, 0.5]
    on_scan = frame @ motion @ np.linalg.inv(frame)
    left = spatial.warp_affine(_in_frame(image, frame, work),
                               torch.from_numpy(motion).float())
    right = _in_frame(spatial.warp_affine(image, torch.from_numpy(on_scan).float()), frame, work)
    wrong = _in_frame(spatial.warp_affine(image, torch.from_numpy(motion).float()), frame, work)
    inner = (slice(None), slice(None), *[slice(6, -6)] * 3)
    error = float((left - right)[inner].abs().mean())
    assert error < 0.1 * float(image.std())  # two interpolations apart
    assert error < 0.3 * float((left - wrong)[inner].abs().mean())  # the matrix unconverted
