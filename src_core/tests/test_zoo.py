"""The shipped zoo: every model loads without executing code and behaves at identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepreg_core import synth, zoo
from deepreg_core.image import Image
from deepreg_core.inference import register

SHIPPED = ["affine-2d", "affine-3d", "deformable-2d", "deformable-3d", "global-local-2d"]


def test_the_zoo_ships_its_models():
    shipped = {name for name, entry in zoo.entries().items() if entry.shipped}
    assert set(SHIPPED) <= shipped
    for name in SHIPPED:
        entry = zoo.get(name)
        assert (entry.path / "card.md").is_file() and "## Training" in entry.card
        size = (entry.path / "weights.safetensors").stat().st_size
        assert size < 8 * 1024**2  # a few MB in all




@pytest.mark.parametrize("name", SHIPPED)
def test_model_matches_its_name_and_keeps_an_identical_pair_still(name):
    """An identical pair of the kind of image the model was trained on (an MNI-trained model is
    not asked about label-map renderings it never saw: deformable-3d at 12,250 steps moved those
    by 0.6-0.9 voxel on average) stays within half a voxel on average (the identical MNI pair
    here: 0.051 voxel at step 19,500, 0.105 at 12,250, 0.083 at 7,013). `fast` keeps such a pair
    exactly still (test_presets), this is the network's own field."""
    model = zoo.load_model(name)
    cfg = model.config
    assert cfg.model.ndim == int(name[-2])
    assert cfg.model.kind == name.rsplit("-", 1)[0].replace("-", "_")
    shape = tuple(cfg.data.shape)
    if cfg.data.source == "mni" and _has_nilearn():
        image = synth.mni_pair(shape, 99, deformable=False).fixed
    else:
        image = synth.synthetic_pair(shape, 99, deformable=False).fixed
    with torch.no_grad():
        out = model(image, image)
    magnitude = out.displacement.norm(dim=1).mean().item()
    assert magnitude < 0.5, f"{name}: an identical pair moved by {magnitude:.3f} voxels"
    if cfg.model.kind == "affine":  # symmetric (sqrt(A_fm A_mf^-1)): the identity, to rounding
        np.testing.assert_allclose(out.affine[0].numpy(), np.eye(len(shape) + 1), atol=1e-3)


def test_register_by_kind_picks_the_zoo_model_for_the_dimensionality():
    pair = synth.mni_pair((58, 50), 1001) if _has_nilearn() else synth.synthetic_pair((64, 64), 1)
    fixed = Image.from_array(pair.fixed[0, 0].numpy(), spacing=(2.0, 2.0))
    moving = Image.from_array(pair.moving[0, 0].numpy(), spacing=(2.0, 2.0))
    result = register(fixed, moving, model="affine+deformable", refine_steps=20)
    assert result.model_name == "affine-2d+deformable-2d"
    assert result.affine is not None and result.affine.shape == (3, 3)
    assert result.metrics["ncc_after"] > result.metrics["ncc_before"]


def test_unknown_model_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="deformable-2d"):
        zoo.get("deformable-4d")


def _has_nilearn() -> bool:
    try:
        import nilearn  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_twice_and_give_identical_output(name):
    """Two independent loads on CPU, the same input: bit-identical fields (no hidden randomness)."""
    first, second = zoo.load_model(name, device="cpu"), zoo.load_model(name, device="cpu")
    shape = tuple(first.config.data.shape)
    pair = synth.synthetic_pair(shape, 1234)
    with torch.no_grad():
        a = first(pair.fixed, pair.moving).displacement
        b = second(pair.fixed, pair.moving).displacement
        c = first(pair.fixed, pair.moving).displacement
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.isfinite(a).all()


@pytest.mark.skipif(not _has_nilearn(), reason="the slice cases need nilearn's MNI152")
def test_trained_deformable_2d_recovers_deformations_it_never_saw():
    """Network only, MNI slices in random orientations (seeds 1000+, never drawn in training).

    The bench (`bench/evaluate_zoo.py deformable-2d`) measures the median endpoint error at less
    than half of the unregistered one; each case here must at least cut it by a quarter and
    raise Dice, which an untrained network (error ratio ~1.05) does not.
    """
    from deepreg_core.evaluation import SHAPES, make_case

    for seed in (1000, 1001, 1002):
        fixed, moving, fixed_labels, moving_labels, truth = make_case("slice", SHAPES["slice"],
                                                                      seed)
        result = register(fixed, moving, model="deformable-2d", preset="fast", device="cpu",
                          fixed_labels=fixed_labels, moving_labels=moving_labels, qa=False,
                          affine_start=False, fallback=False)  # the deformable network alone
        spacing = np.asarray(fixed.spacing).reshape(-1, 1, 1)
        brain = np.asarray(fixed_labels.data) > 0
        before = np.linalg.norm(truth * spacing, axis=0)[brain].mean()
        after = np.linalg.norm((result.displacement - truth) * spacing, axis=0)[brain].mean()
        assert after < 0.75 * before, f"seed {seed}: {after:.2f} mm vs {before:.2f} mm before"
        assert result.metrics["dice_after"] > result.metrics["dice_before"]


def test_trained_deformable_3d_recovers_a_deformation_it_never_saw():
    """Network only, an MNI 2 mm volume under a smooth deformation and a small affine (seed 1003,
    an evaluation seed: never drawn in training, which also never saw an affine).

    The bench (`bench/evaluate_zoo.py deformable-3d`) measures a median error ratio of 0.35
    (7.07 -> 2.49 mm at step 19,500; 2.91 at 12,250, 3.08 at 7,013); the case must at least cut
    the error by a third and raise Dice, which the short run shipped before (ratio 1.04 on this
    case, Dice 0.605 -> 0.582) did not.
    """
    from deepreg_core.evaluation import SHAPES, make_case

    fixed, moving, fixed_labels, moving_labels, truth = make_case("mni", SHAPES["mni"], 1003)
    result = register(fixed, moving, model="deformable-3d", preset="fast", device="cpu",
                      fixed_labels=fixed_labels, moving_labels=moving_labels, qa=False,
                      affine_start=False, fallback=False)  # the deformable network alone
    spacing = np.asarray(fixed.spacing).reshape(-1, 1, 1, 1)
    brain = np.asarray(fixed_labels.data) > 0
    before = np.linalg.norm(truth * spacing, axis=0)[brain].mean()
    after = np.linalg.norm((result.displacement - truth) * spacing, axis=0)[brain].mean()
    assert after < 0.67 * before, f"{after:.2f} mm vs {before:.2f} mm before"
    assert result.metrics["dice_after"] > result.metrics["dice_before"]


@pytest.mark.skipif(not _has_nilearn(), reason="the cases need nilearn's MNI152")
@pytest.mark.parametrize("name, data, seeds, within_mm, ratio", [
    ("affine-2d", "slice", (1000, 1001, 1002), 3.0, 1.0),
    ("affine-3d", "mni", (1000,), float("inf"), 0.3)])
def test_trained_affine_networks_recover_affines_they_never_saw(name, data, seeds, within_mm,
                                                                 ratio):
    """Network only, pure random affines inside the training range (20 degrees per plane, scale
    0.1, shifts up to 10 voxels; evaluation seeds, never drawn in training).

    The bench (`bench/evaluate_zoo.py affine-2d affine-3d`, "pure affines") measures affine-2d at
    a median 0.68 pixel (2 mm), worst 1.40 (each 2D case here must end within 1.5 pixels, 3 mm,
    and better than it started), affine-3d at a median 1.84 voxels of ~13.5 before (1.59 on the
    case here, which must end under 0.3 of its error; the step-8,699 network only halved it).
    Both must raise Dice. The short runs shipped before did neither (2D: 7.4 -> 7.4 pixels; 3D:
    12.4 -> 10.0 voxels).
    """
    from deepreg_core.evaluation import SHAPES, make_case

    options = dict(deformable=False, affine=True, rotation=20.0, scale=0.1, shear=0.03,
                   translation=10.0)
    for seed in seeds:
        fixed, moving, fixed_labels, moving_labels, truth = make_case(data, SHAPES[data], seed,
                                                                      **options)
        result = register(fixed, moving, model=name, refine_steps=0, device="cpu",
                          fixed_labels=fixed_labels, moving_labels=moving_labels, qa=False,
                          fallback=False)  # the network's field, raw
        spacing = np.asarray(fixed.spacing).reshape((-1,) + (1,) * fixed.ndim)
        brain = np.asarray(fixed_labels.data) > 0
        before = np.linalg.norm(truth * spacing, axis=0)[brain].mean()
        after = np.linalg.norm((result.displacement - truth) * spacing, axis=0)[brain].mean()
        assert after < min(within_mm, ratio * before), \
            f"seed {seed}: {after:.2f} mm vs {before:.2f} mm before"
        assert result.metrics["dice_after"] > result.metrics["dice_before"]
