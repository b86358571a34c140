"""Events, the stop token, and synthetic pairs checked against their own ground truth."""

from __future__ import annotations

import dataclasses
import math
import sys
import threading

import numpy as np
import pytest
import torch

from deepreg_core import synth
from deepreg_core.evaluation import make_case
from deepreg_core.events import (
    CheckpointSaved,
    Finished,
    Metrics,
    Progress,
    Started,
    Stopped,
    StopRequested,
    StopToken,
    drain,
)
from deepreg_core.losses import ncc
from deepreg_core.metrics import folding_fraction, mean_dice
from deepreg_core.spatial import identity_grid, integrate_velocity, warp
from deepreg_core.synth import (
    AffineParams,
    make_affine,
    mni_pair,
    random_affine,
    random_crop,
    random_field_of_view,
    random_label_map,
    random_velocity,
    render_labels,
    synthetic_pair,
)

# ----------------------------------------------------------------------------- events


def test_events_are_frozen_values():
    event = Progress(step=3, total=10)
    assert event == Progress(3, 10, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.step = 4  # type: ignore[misc]
    assert Metrics(1, {"loss": 0.5}).phase == "train"
    assert CheckpointSaved(2, "x").step == 2 and Stopped(5).checkpoint is None


def test_stop_token_is_set_from_another_thread():
    token = StopToken()
    assert not token.stopped
    token.raise_if_stopped()  # nothing to raise yet
    thread = threading.Thread(target=token.stop)
    thread.start()
    thread.join()
    assert token.stopped
    with pytest.raises(StopRequested, match="stop was requested"):
        token.raise_if_stopped()


def test_drain_returns_last_event_and_reports_each():
    seen = []
    events = [Started(2, {}), Progress(1, 2), Progress(2, 2), Finished({"x": 1})]
    last = drain(iter(events), on_event=seen.append)
    assert last == Finished({"x": 1}) and seen == events


def test_drain_refuses_an_empty_job():
    with pytest.raises(ValueError, match="at least one event"):
        drain(iter([]))


# ----------------------------------------------------------------------------- label maps


def test_label_map_is_reproducible_and_seed_dependent():
    a = random_label_map((32, 32), 5, torch.Generator().manual_seed(7))
    b = random_label_map((32, 32), 5, 7)
    c = random_label_map((32, 32), 5, 8)
    assert a.shape == (1, 1, 32, 32) and a.dtype == torch.int64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= int(a.min()) and int(a.max()) <= 4
    assert len(torch.unique(a)) >= 3  # several labels, not a single blob


def test_label_map_3d_and_errors():
    assert random_label_map((8, 12, 10), 3, 0).shape == (1, 1, 8, 12, 10)
    with pytest.raises(ValueError, match="n_labels"):
        random_label_map((16, 16), 0, 0)
    with pytest.raises(ValueError, match="shape"):
        random_label_map((16,), 3, 0)
    with pytest.raises(TypeError, match="generator"):
        random_label_map((16, 16), 3, "seed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        random_label_map((16, 16), 3, 0, scale=-1.0)


def test_render_without_blur_bias_noise_is_piecewise_constant_per_label():
    labels = random_label_map((24, 24), 4, 0)
    image = render_labels(labels, 1, max_blur=0, max_bias=0, max_noise=0)
    for value in torch.unique(labels):
        region = image[labels == value]
        assert float(region.max() - region.min()) < 1e-6  # one intensity per label
    other = render_labels(labels, 2, max_blur=0, max_bias=0, max_noise=0)
    means = [float(image[labels == v].mean()) for v in torch.unique(labels)]
    other_means = [float(other[labels == v].mean()) for v in torch.unique(labels)]
    assert max(abs(a - b) for a, b in zip(means, other_means)) > 0.1  # a different contrast


def test_render_stays_in_unit_range_and_is_reproducible():
    labels = random_label_map((32, 32), 6, 3)
    image = render_labels(labels, 4, max_bias=1.0, max_noise=0.5)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert torch.equal(image, render_labels(labels, 4, max_bias=1.0, max_noise=0.5))


def test_render_rejects_float_labels_and_bad_magnitudes():
    with pytest.raises(TypeError, match="integer"):
        render_labels(torch.zeros(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="shape"):
        render_labels(torch.zeros(8, 8, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="max_noise"):
        render_labels(torch.zeros(1, 1, 8, 8, dtype=torch.long), 0, max_noise=-1.0)


# ----------------------------------------------------------------------------- transforms


def test_random_velocity_bounds_smoothness_and_reproducibility():
    v = random_velocity((48, 48), 0, max_std=4.0, smoothness=12.0)
    assert v.shape == (1, 2, 48, 48)
    assert float(v.std()) <= 4.0 + 1e-5
    assert torch.equal(v, random_velocity((48, 48), 0, max_std=4.0, smoothness=12.0))
    assert not torch.equal(v, random_velocity((48, 48), 1, max_std=4.0, smoothness=12.0))
    # smooth: neighbouring voxels differ by much less than the field's spread
    step = (v[..., 1:, :] - v[..., :-1, :]).abs().mean()
    assert float(step) < 0.25 * float(v.std())
    # exp(v) of a smooth field does not fold
    assert folding_fraction(integrate_velocity(v)) == 0.0


def test_random_velocity_zero_magnitude_is_zero_and_errors():
    assert float(random_velocity((16, 16, 16), 0, max_std=0.0).abs().max()) == 0.0
    with pytest.raises(ValueError, match="max_std"):
        random_velocity((16, 16), 0, max_std=float("nan"))
    with pytest.raises(ValueError, match="smoothness"):
        random_velocity((16, 16), 0, smoothness=0.0)


@pytest.mark.parametrize("shape", [(16, 20), (8, 10, 12)])
def test_random_affine_with_zero_magnitudes_is_identity(shape):
    matrix = random_affine(shape, 5, rotation=0, scale=0, shear=0, translation=0)
    assert torch.equal(matrix, torch.eye(len(shape) + 1))


def test_make_affine_rotates_about_the_centre():
    params = AffineParams(rotation=(90.0,), scale=(1.0, 1.0), shear=(0.0,), translation=(0.0, 0.0))
    A = make_affine(params, (5, 5))
    centre = torch.tensor([2.0, 2.0, 1.0])
    assert torch.allclose(A @ centre, centre, atol=1e-6)
    # (2, 4) is 2 voxels from the centre along axis 1; a quarter turn takes it to (0, 2)
    moved = A @ torch.tensor([2.0, 4.0, 1.0])
    assert torch.allclose(moved, torch.tensor([0.0, 2.0, 1.0]), atol=1e-6)


def test_make_affine_scale_shear_translation_known_values():
    params = AffineParams(rotation=(0.0, 0.0, 0.0), scale=(2.0, 1.0, 0.5),
                          shear=(0.1, 0.0, 0.0), translation=(1.0, -2.0, 3.0))
    A = make_affine(params, (9, 9, 9))
    assert math.isclose(float(torch.linalg.det(A[:3, :3])), 1.0, rel_tol=1e-6)
    centre = torch.tensor([4.0, 4.0, 4.0, 1.0])
    assert torch.allclose(A @ centre, torch.tensor([5.0, 2.0, 7.0, 1.0]))
    with pytest.raises(ValueError, match="params.rotation"):
        make_affine(params, (9, 9))


def test_random_affine_bounds_and_reproducibility():
    magnitudes = {"rotation": 20, "scale": 0.2, "shear": 0.1, "translation": 3}
    a = random_affine((32, 32), 0, **magnitudes)
    assert torch.equal(a, random_affine((32, 32), 0, **magnitudes))
    assert not torch.equal(a, random_affine((32, 32), 1, **magnitudes))
    p = synth.sample_affine_params(3, 0, rotation=20, scale=0.2, shear=0.1, translation=3)
    assert all(abs(r) <= 20 for r in p.rotation) and all(0.8 <= s <= 1.2 for s in p.scale)
    assert all(abs(t) <= 3 for t in p.translation) and all(abs(s) <= 0.1 for s in p.shear)
    with pytest.raises(ValueError, match="scale"):
        random_affine((32, 32), 0, scale=1.5)
    with pytest.raises(ValueError, match="rotation"):
        random_affine((32, 32), 0, rotation=-1)
    with pytest.raises(ValueError, match="ndim"):
        synth.sample_affine_params(4, 0)


# ----------------------------------------------------------------------------- pairs


def _interior(x: torch.Tensor, margin: int = 4) -> torch.Tensor:
    index = (Ellipsis,) + (slice(margin, -margin),) * (x.dim() - 2)
    return x[index]


def _lands_inside(u: torch.Tensor, margin: int = 3) -> torch.Tensor:
    """Fixed voxels whose image ``x + u(x)`` lies inside the moving grid (``margin`` voxels in).

    Elsewhere the moving image had to be extrapolated, so no ground truth can hold there.
    """
    phi = identity_grid(u.shape[2:]) + u
    upper = torch.tensor(u.shape[2:]).view(1, -1, *[1] * (u.dim() - 2)) - 1 - margin
    return ((phi >= margin) & (phi <= upper)).all(dim=1, keepdim=True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("affine", [False, True])
def test_synthetic_pair_ground_truth_aligns_images_and_labels(seed, affine):
    pair = synthetic_pair((48, 48), seed, affine=affine, same_contrast=True, max_bias=0,
                          max_noise=0, max_blur=2.0, velocity_std=4.0, smoothness=12.0)
    assert pair.displacement.shape == (1, 2, 48, 48)
    assert float(pair.displacement.abs().max()) > 0.5  # a real deformation, not a no-op
    assert (pair.affine is not None) == affine
    inside = _lands_inside(pair.displacement)
    assert float(inside.float().mean()) > 0.5
    before = float(((pair.moving - pair.fixed) ** 2)[inside].mean())
    aligned = warp(pair.moving, pair.displacement)
    after = float(((aligned - pair.fixed) ** 2)[inside].mean())
    assert after < 3e-3 and after < 0.2 * before
    moved = warp(pair.moving_labels, pair.displacement, mode="nearest")
    assert mean_dice(moved[inside], pair.fixed_labels[inside]) > 0.9


def test_synthetic_pair_3d_ground_truth():
    pair = synthetic_pair((20, 20, 20), 0, affine=True, same_contrast=True, max_bias=0,
                          max_noise=0, max_blur=2.0, velocity_std=2.0, translation=1.0)
    moved = warp(pair.moving_labels, pair.displacement, mode="nearest")
    inside = _lands_inside(pair.displacement, 2)
    assert mean_dice(moved[inside], pair.fixed_labels[inside]) > 0.9


def test_synthetic_pair_multimodal_changes_contrast_not_geometry():
    pair = synthetic_pair((32, 32), 4, same_contrast=False, max_bias=0, max_noise=0, max_blur=0)
    aligned = warp(pair.moving, pair.displacement)
    labels = pair.fixed_labels
    fixed_means = torch.stack([pair.fixed[labels == v].mean() for v in torch.unique(labels)])
    moving_means = torch.stack([aligned[labels == v].mean() for v in torch.unique(labels)])
    assert float((fixed_means - moving_means).abs().max()) > 0.1  # another "modality"
    moved = warp(pair.moving_labels, pair.displacement, mode="nearest")
    inside = _lands_inside(pair.displacement)
    assert mean_dice(moved[inside], labels[inside]) > 0.9


def test_synthetic_pair_reproducible_and_identity_without_transforms():
    a = synthetic_pair((32, 32), 11)
    b = synthetic_pair((32, 32), torch.Generator().manual_seed(11))
    for name in ("fixed", "moving", "displacement", "moving_labels"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.fixed, synthetic_pair((32, 32), 12).fixed)
    still = synthetic_pair((32, 32), 0, deformable=False, affine=False)
    assert float(still.displacement.abs().max()) == 0.0
    assert torch.equal(still.moving_labels, still.fixed_labels)


def test_mni_pair_ground_truth():
    pytest.importorskip("nilearn")
    pair = mni_pair((64, 64), 0, velocity_std=3.0, max_noise=0.0)
    assert pair.fixed.shape == (1, 1, 64, 64)
    assert set(torch.unique(pair.fixed_labels).tolist()) == {0, 1, 2}
    before = float(((pair.moving - pair.fixed) ** 2).mean())
    after = float(_interior((warp(pair.moving, pair.displacement) - pair.fixed) ** 2).mean())
    assert before > 0 and after < 0.3 * before
    moved = warp(pair.moving_labels, pair.displacement, mode="nearest")
    assert mean_dice(_interior(moved), _interior(pair.fixed_labels)) > 0.85
    other = mni_pair((64, 64), 0, velocity_std=3.0, max_noise=0.0, same_contrast=False)
    assert torch.equal(other.displacement, pair.displacement)  # same draw, other contrast
    assert not torch.allclose(other.moving, pair.moving)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_crop_keeps_the_ground_truth_exact(seed):
    pair = synthetic_pair((48, 48), seed, affine=True, same_contrast=True, max_bias=0,
                          max_noise=0, max_blur=2.0, velocity_std=3.0, smoothness=12.0,
                          rotation=20.0, translation=4.0)
    cut = random_crop(pair, seed + 10, 0.5)
    assert cut.fixed.shape == pair.fixed.shape and cut.displacement.shape == (1, 2, 48, 48)
    assert not torch.equal(cut.fixed, pair.fixed)  # a real crop, resized back
    assert cut.fixed_labels.dtype == torch.int64
    inside = _lands_inside(cut.displacement)
    before = float(((cut.moving - cut.fixed) ** 2)[inside].mean())
    after = float(((warp(cut.moving, cut.displacement) - cut.fixed) ** 2)[inside].mean())
    assert after < 0.2 * before
    moved = warp(cut.moving_labels, cut.displacement, mode="nearest")
    assert mean_dice(moved[inside], cut.fixed_labels[inside]) > 0.9
    # a field that is ignored the same way (wrong scale) does not align: the rescale matters
    wrong = warp(cut.moving_labels, cut.displacement * 0.5, mode="nearest")
    assert mean_dice(wrong[inside], cut.fixed_labels[inside]) < mean_dice(moved[inside],
                                                                         cut.fixed_labels[inside])


def test_random_crop_translation_is_rescaled_into_the_new_voxels_and_bad_fractions_refused():
    pair = synthetic_pair((40, 40), 0, deformable=False, affine=True, rotation=0.0, scale=0.0,
                          shear=0.0, translation=3.0)
    shift = pair.displacement[0, :, 0, 0]
    cut = random_crop(pair, 5, 0.5)
    factor = cut.displacement[0, :, 20, 20] / shift  # (n - 1) / (b - 1) for a box of b voxels
    assert bool(((factor >= 1.0 - 1e-5) & (factor <= 39 / 19 + 1e-5)).all())
    torch.testing.assert_close(cut.displacement, cut.displacement[:, :, :1, :1].expand_as(
        cut.displacement))
    assert random_crop(pair, 5, 1.0) is pair
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ValueError, match="min_fraction"):
            random_crop(pair, 0, bad)


def test_random_field_of_view_blanks_one_box_in_both_images_and_keeps_the_truth():
    pair = synthetic_pair((40, 36), 2, affine=True, max_noise=0.0)
    cut = random_field_of_view(pair, 7, 0.3)
    assert torch.equal(cut.displacement, pair.displacement)
    kept = cut.fixed != 0
    rows, cols = kept[0, 0].any(dim=1), kept[0, 0].any(dim=0)
    box = kept[0, 0][rows][:, cols]
    assert bool(box.all()) or float(box.float().mean()) > 0.95  # one rectangle, not scattered
    assert int(rows.sum()) < 40 or int(cols.sum()) < 36  # something was blanked
    assert torch.equal(cut.moving != 0, kept & (pair.moving != 0))  # the same box
    assert torch.equal(cut.fixed_labels[~kept], torch.zeros_like(cut.fixed_labels[~kept]))
    assert random_field_of_view(pair, 7, 1.0) is pair


def test_mni_pair_pose_moves_the_fixed_image_and_keeps_the_ground_truth():
    pytest.importorskip("nilearn")
    plain = mni_pair((64, 64), 3, velocity_std=2.0, max_noise=0.0, affine=True, rotation=20.0)
    posed = mni_pair((64, 64), 3, velocity_std=2.0, max_noise=0.0, affine=True, rotation=20.0,
                     pose=True)
    assert float((posed.fixed - plain.fixed).abs().mean()) > 0.02  # not the template's pose
    moved = warp(posed.moving_labels, posed.displacement, mode="nearest")
    inside = _lands_inside(posed.displacement)
    assert mean_dice(moved[inside], posed.fixed_labels[inside]) > 0.85
    other = [mni_pair((64, 64), s, max_noise=0.0, pose=True, same_contrast=False).fixed
             for s in range(6)]
    template = mni_pair((64, 64), 0, max_noise=0.0).fixed
    # some fixed images get their own contrast: far from the template's even where it lies
    assert max(float(ncc(f, template)) for f in other) < 0.99


def test_mni_pair_without_nilearn_says_how_to_install(monkeypatch):
    synth.mni.mni_volumes.cache_clear()
    synth.mni.mni_stack.cache_clear()
    monkeypatch.setitem(sys.modules, "nilearn", None)
    with pytest.raises(ImportError, match="pip install nilearn"):
        mni_pair((16, 16), 0)
    synth.mni.mni_volumes.cache_clear()
    synth.mni.mni_stack.cache_clear()


def test_mni_pair_resolution_1mm_reads_the_same_anatomy():
    pytest.importorskip("nilearn")
    two = mni_pair((64, 64), 0, deformable=False, max_noise=0.0)
    one = mni_pair((64, 64), 0, deformable=False, max_noise=0.0, resolution=1)
    assert float(ncc(two.fixed, one.fixed)) > 0.9  # the same axial slice, from either template
    assert not torch.equal(two.fixed, one.fixed)
    with pytest.raises(ValueError, match="resolution"):
        mni_pair((16, 16), 0, resolution=3)


# ----------------------------------------------------------------------------- evaluation cases


def _as_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.data, dtype=np.float32))[None, None]


def _case_tensors(case):
    *images, truth = case
    return (*[_as_tensor(image) for image in images], torch.from_numpy(truth)[None])


def _check_case_truth(case, shape, spacing, labels=(0, 1, 2), within=0.95, overlap=0.85):
    """Shapes, spacing, and ``warp(moving, truth)`` matching ``fixed`` inside the brain (NCC
    above ``within``, labels' Dice above ``overlap``), where ``truth`` maps into the moving grid
    (a small field of view loses tissue beyond its border)."""
    fixed, moving, fixed_labels, moving_labels, truth = case
    for image in (fixed, moving, fixed_labels, moving_labels):
        assert tuple(image.shape) == tuple(shape)
        assert tuple(image.spacing) == pytest.approx(spacing)
    assert truth.shape == (len(shape), *shape)
    f, m, fl, ml, u = _case_tensors(case)
    assert set(torch.unique(fl).tolist()) == set(map(float, labels))
    where = identity_grid(tuple(shape)) + u
    inside = torch.ones_like(f, dtype=torch.bool)
    for axis, n in enumerate(shape):
        inside &= (where[:, axis:axis + 1] >= 0) & (where[:, axis:axis + 1] <= n - 1)
    brain = ((fl > 0) & inside).float()
    before = float(ncc(f, m, brain))
    after = float(ncc(f, warp(m, u), brain))
    assert after > before and after > within
    moved = warp(ml, u, mode="nearest").long()
    assert mean_dice(moved, fl.long()) > max(overlap, mean_dice(ml.long(), fl.long()))
    return u


def test_make_case_mni_2mm_is_unchanged():
    """Seed 1000 of the 2 mm cases, as computed before the 1 mm / slice kinds were added."""
    pytest.importorskip("nilearn")
    fixed, moving, fixed_labels, moving_labels, truth = make_case("mni", (99, 117, 95), 1000)
    assert fixed.spacing == (2.0, 2.0, 2.0) and truth.shape == (3, 99, 117, 95)
    assert float(fixed.data.astype(np.float64).sum()) == pytest.approx(183835.43997869472, rel=1e-6)
    assert float(moving.data.astype(np.float64).sum()) == pytest.approx(183858.76509061691,
                                                                        rel=1e-6)
    assert int(fixed_labels.data.sum()) == 295090
    assert abs(int(moving_labels.data.sum()) - 294217) <= 5
    assert float(truth.astype(np.float64).sum()) == pytest.approx(927464.6635760665, rel=1e-5)
    assert float(np.abs(truth).astype(np.float64).sum()) == pytest.approx(10416757.98497492,
                                                                          rel=1e-5)
    assert truth[:, 50, 60, 40] == pytest.approx([0.236351, -0.663258, 3.945168], abs=1e-4)


def test_make_case_slice_random_2d_mni_slices():
    pytest.importorskip("nilearn")
    cases = [make_case("slice", (128, 128), seed) for seed in (1000, 1001)]
    for case in cases:
        u = _check_case_truth(case, (128, 128), (2.0, 2.0))
        assert float(u.abs().max()) > 1.0  # a real transform
    assert not np.allclose(cases[0][0].data, cases[1][0].data)  # another slice per seed
    again = make_case("slice", (128, 128), 1000)
    assert np.array_equal(again[1].data, cases[0][1].data)  # reproducible
    with pytest.raises(ValueError, match="2D"):
        make_case("slice", (16, 16, 16), 0)


def test_make_case_mni1mm_real_1mm_template():
    pytest.importorskip("nilearn")
    case = make_case("mni1mm", (197, 233, 189), 1000)
    u = _check_case_truth(case, (197, 233, 189), (1.0, 1.0, 1.0))
    brain = case[2].data > 0
    epe_before_mm = float(np.linalg.norm(u[0].numpy(), axis=0)[brain].mean())
    assert 2.0 < epe_before_mm < 20.0  # the 2 mm cases' physical size (mm), not voxels of 2 mm


@pytest.mark.parametrize("data, spacing, classes, within, overlap", [
    ("t1slice", (1.0, 1.0), 4, 0.95, 0.85), ("nib-t1", (2.0, 2.0, 2.0), 3, 0.85, 0.6),
    ("nib-epi", (2.0, 2.0, 2.2), 3, 0.85, 0.6), ("dipy-b0", (4.0, 4.0, 5.0), 3, 0.85, 0.6)])
def test_make_case_real_scans_keep_their_geometry_and_tissue_classes(data, spacing, classes,
                                                                     within, overlap):
    """The real scans' cases: the file's shape and header spacing, background plus the
    multi-Otsu classes as labels, a truth that carries moving onto fixed, seeded. The 3D scans
    are small and coarse (25 slices, up to 5 mm): resampling there and back loses detail, so the
    truth's match is looser than on the 1 mm slice."""
    from deepreg_core.evaluation import REAL_SCANS, SHAPES

    pytest.importorskip(REAL_SCANS[data][0])  # the package that ships the scan
    case = make_case(data, SHAPES[data], 1000)
    u = _check_case_truth(case, SHAPES[data], spacing, labels=tuple(range(classes)),
                          within=within, overlap=overlap)
    assert float(u.abs().max()) > 1.0  # a real transform
    again = make_case(data, SHAPES[data], 1000)
    assert np.array_equal(again[1].data, case[1].data)  # reproducible
    assert not np.array_equal(make_case(data, SHAPES[data], 1001)[1].data, case[1].data)


def test_transform_case_gives_the_truth_of_any_image():
    """A pure shift of a smooth 3D blob: the truth is that constant shift, and the moving image
    read at x + truth(x) is the fixed image (away from the border the shift cuts)."""
    from deepreg_core.evaluation import transform_case

    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 24)] * 3, indexing="ij"))
    image = np.exp(-4 * (grid ** 2).sum(0)).astype(np.float32)
    labels = (image > 0.5).astype(np.int32)
    moving, moving_labels, forward = transform_case(
        image, 7, labels=labels, deformable=False, rotation=0.0, scale=0.0, shear=0.0,
        translation=3.0)
    assert forward.shape == (3, 24, 24, 24) and moving.shape == image.shape
    shift = forward.reshape(3, -1).mean(1)
    assert np.allclose(forward, shift.reshape(3, 1, 1, 1), atol=1e-4)  # a constant shift
    assert 0.1 < np.abs(shift).max() <= 3.0 + 1e-4
    back = warp(torch.from_numpy(moving)[None, None], torch.from_numpy(forward)[None])
    inner = (slice(4, -4),) * 3
    assert np.abs(back[0, 0].numpy()[inner] - image[inner]).max() < 0.05
    assert set(np.unique(moving_labels)) <= {0.0, 1.0} and moving_labels.sum() > 0
    same = transform_case(image, 7, deformable=False, rotation=0.0, scale=0.0, shear=0.0,
                          translation=3.0)
    assert np.array_equal(same[0], moving) and same[1] is None  # seeded, labels optional
    with pytest.raises(ValueError, match="velocity_std"):
        transform_case(image, 7, sigma=2.0)


def test_evaluate_model_runs_on_a_real_scan_at_its_own_shape():
    """The real-scan kinds use the scan's shape whatever the model (a zoo network's working
    grid, or a model with no grid: rigid refinement), and report it."""
    pytest.importorskip("nibabel")
    from deepreg_core.evaluation import SHAPES, evaluate_model

    for model in ("rigid", "deformable-3d"):
        report = evaluate_model(model, data="nib-t1", cases=1, refine_steps=None,
                                preset="fast" if model != "rigid" else "auto")
        assert tuple(report["shape"]) == SHAPES["nib-t1"]
        assert report["summary"]["dice"] > report["summary"]["dice_before"]


def test_make_case_rejects_unknown_data():
    with pytest.raises(ValueError, match="mni1mm"):
        make_case("nope", (8, 8), 0)
