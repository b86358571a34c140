"""Instance optimisation: the schedule, affine recovery, deformable recovery, stop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepreg_core import optimize, synth
from deepreg_core.events import Progress, StopToken
from deepreg_core.image import Image
from deepreg_core.inference import normalize_intensity, register
from deepreg_core.models import ModelConfig, build_model


def _affine_pair(shape=(96, 96), seed=7):
    pair = synth.synthetic_pair(shape, seed, deformable=False, affine=True, same_contrast=True,
                                rotation=8.0, scale=0.08, shear=0.0, translation=4.0,
                                max_bias=0.0, max_noise=0.01)
    spacing = (1.0,) * len(shape)
    return (Image.from_array(pair.fixed[0, 0].numpy(), spacing=spacing),
            Image.from_array(pair.moving[0, 0].numpy(), spacing=spacing),
            pair.affine.double().numpy(), pair.displacement[0].numpy())


def test_schedule_splits_the_budget_and_skips_levels_too_small():
    levels = optimize.schedule(50, (99, 117, 95))
    assert [(lv.kind, lv.factor) for lv in levels] == [
        ("affine", 4), ("affine", 2), ("deformable", 4), ("deformable", 2), ("deformable", 1)]
    assert [lv.steps for lv in levels] == [60, 20, 30, 20, 5]
    small = optimize.schedule(50, (20, 20))  # 10 x 10 is too small for any coarse level
    assert [(lv.kind, lv.factor, lv.steps) for lv in small] == [("affine", 1, 80), ("deformable", 1, 55)]
    assert all(lv.kind == "deformable" for lv in optimize.schedule(20, (64, 64), affine=False))
    assert all(lv.kind == "affine" for lv in optimize.schedule(20, (64, 64), affine_only=True))
    assert optimize.schedule(0, (64, 64)) == []


def test_affine_model_with_refinement_recovers_a_known_affine_and_stays_affine():
    fixed, moving, truth_matrix, truth = _affine_pair()
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind="affine", ndim=2, affine_features=[8, 8, 8]))
    result = register(fixed, moving, model=net, refine_steps=60)
    inner = (slice(None), slice(12, -12), slice(12, -12))
    before = np.linalg.norm(truth[inner], axis=0).mean()
    after = np.linalg.norm((result.displacement - truth)[inner], axis=0).mean()
    assert before > 3.0
    assert after < 0.1 * before
    np.testing.assert_allclose(result.affine[:2, :2], truth_matrix[:2, :2], atol=0.02)
    # the field is exactly the matrix: an affine model's refinement stays affine
    from deepreg_core.spatial import affine_to_displacement

    exact = affine_to_displacement(torch.from_numpy(result.affine).float()[None], fixed.shape)
    np.testing.assert_allclose(result.displacement, exact[0].numpy(), atol=1e-4)


def test_affine_levels_leave_an_aligned_pair_alone():
    fixed, _, _, _ = _affine_pair()
    f = torch.from_numpy(normalize_intensity(fixed.data))[None, None]
    events = list(optimize.refine_iter(f, f.clone(), torch.zeros(1, 2, *fixed.shape), steps=20,
                                       affine_only=True))
    refined = events[-1]
    assert isinstance(refined, optimize.Refined)
    assert refined.displacement.abs().max() < 0.1
    np.testing.assert_allclose(refined.affine.numpy(), np.eye(3), atol=2e-3)
    assert all(isinstance(e, Progress) for e in events[:-1])
    assert [e.step for e in events[:-1]] == list(range(1, len(events)))


def test_stop_ends_the_refinement_without_a_field():
    fixed, moving, _, _ = _affine_pair()
    f = torch.from_numpy(normalize_intensity(fixed.data))[None, None]
    m = torch.from_numpy(normalize_intensity(moving.data))[None, None]
    stop = StopToken()
    seen = []
    for event in optimize.refine_iter(f, m, torch.zeros(1, 2, *fixed.shape), steps=20, stop=stop):
        seen.append(event)
        if len(seen) == 3:
            stop.stop()
    assert len(seen) == 3
    assert not any(isinstance(e, optimize.Refined) for e in seen)


@pytest.mark.parametrize("affine", [True, False])
def test_refinement_is_reproducible(affine):
    fixed, moving, _, _ = _affine_pair(shape=(64, 64))
    net = build_model(ModelConfig(kind="deformable", ndim=2, features=[8, 8]))
    a = register(fixed, moving, model=net, refine_steps=10, refine_affine=affine, seed=3)
    b = register(fixed, moving, model=net, refine_steps=10, refine_affine=affine, seed=3)
    np.testing.assert_array_equal(a.displacement, b.displacement)
