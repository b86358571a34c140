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
