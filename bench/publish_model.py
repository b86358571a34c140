"""Publish a finished training run into the package's zoo.

    python bench/publish_model.py runs/deformable-2d deformable-2d

Publishes the latest checkpoint into ``src_core/deepreg_core/zoo/models/NAME/`` with
``deepreg_core.zoo.publish`` (weights with their model spec, config, card; atomically) and writes the training part of ``card.md`` (the
evaluation part is filled by ``bench/evaluate_zoo.py``, between its markers).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from deepreg_core import zoo
from deepreg_core.training.checkpoint import CONFIG, WEIGHTS
from deepreg_core.training.config import load_config, save_config
from deepreg_core.training.loop import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "src_core" / "deepreg_core" / "zoo" / "models"
EVAL_START, EVAL_END = "<!-- evaluation:start -->", "<!-- evaluation:end -->"

INPUTS = {
    "affine": "a pair of single-channel images of any contrast (the pair may differ in contrast)",
    "deformable": "a pair already roughly aligned (run an affine model first when it is not)",
    "global_local": "a pair already roughly aligned; the joint saliency map down-weights "
                    "regions without correspondence",
}


def card_text(name: str, ckpt: Path, old_card: str, recipe: str | None = None) -> str:
    recipe = recipe or name
    cfg = load_config(ckpt / "config.yaml")
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    history = meta.get("history", {})
    last_train = (history.get("train") or [{}])[-1]
    last_val = (history.get("val") or [{}])[-1]
    evaluation = "(run `python bench/evaluate_zoo.py " + name + "` to fill this section)"
    after = ""  # what follows the evaluation (the targets met and missed) is kept as written
    if EVAL_START in old_card:
        evaluation = old_card.split(EVAL_START)[1].split(EVAL_END)[0].strip()
        after = old_card.split(EVAL_END, 1)[1].strip() if EVAL_END in old_card else ""
    m, d, lo = cfg.model, cfg.data, cfg.loss
    source = {"synthetic": "SynthMorph-style synthetic label maps rendered with random contrasts",
              "mni": "nilearn's MNI152 2009 T1 template (2 mm) with its GM/WM maps, under random "
                     + " and ".join(part for part, on in (("smooth deformations", d.deformable),
                                                         ("affines", d.affine)) if on)
                     + ("" if d.same_contrast else " and random intensity remaps"),
              "folder": f"images from {d.folder}",
              "mixed": f"a mix: {100 * (1 - d.mni_fraction):.0f} % SynthMorph-style random label "
                       f"maps rendered with random contrasts, bias, blur and noise, "
                       f"{100 * d.mni_fraction:.0f} % nilearn's MNI152 (2 mm) with its GM/WM maps "
                       f"under random {'smooth deformations' if d.deformable else 'affines'} and "
                       "random intensity remaps"
                       + (" (2D: slices in all three orientations, with flips and transposes)"
                          if d.mni_orientation == "random" and m.ndim == 2 else "")}[d.source]
    train_rows = history.get("train") or []
    seconds = sum(float(r.get("seconds", 0.0)) for r in train_rows)
    extra = meta.get("extra", {})
    hardware = (f"{seconds / 3600:.2f} h of training steps on {extra.get('device', 'cpu')} with "
                f"{extra.get('threads', '?')} CPU thread(s) in the last chunk (2-core machine, at times a "
                f"second run beside it)" if seconds else "not recorded")
    init = (f"\n- Initialised from `{cfg.init_from}`" + (f" (its weights fill `{cfg.init_into}`; the "
            "rest starts fresh)" if cfg.init_into else "") + ".") if cfg.init_from else ""
    milestones = "".join(f", {lr:g} from step {step}" for step, lr in cfg.optim.lr_milestones
                         if step <= meta["step"])
    limits = ("\n- Limits: trained on same-contrast pairs only (mono-modal); for pairs of different "
              "contrasts rely on the refinement (`auto`), which measures the match with local NCC "
              "and mutual information.") if d.same_contrast else ""
    augment = "".join([
        "; the fixed image posed at random too (and recontrasted half of the time), so the "
        "template's own position is no cue" if d.pose else "",
        f"; the same random box (each axis {d.crop:g}..1 of its extent) cut from both images "
        "and resized back (other voxel aspect ratios)" if d.crop < 1 else "",
        f"; half the pairs blanked outside a random box (each axis {d.fov:g}..1: partial fields of "
        "view, slabs of slices)" if d.fov < 1 else "",
    ])
    architecture = ""
    if m.kind == "affine":
        architecture = "\n**Architecture**: " + (
            f"centroid head: a feature UNet {m.affine_features} reads each image alone and gives "
            f"{m.keypoints} keypoint heat maps; the affine is the weighted least-squares fit of the "
            "fixed centroids onto the moving ones (equivariant by construction)"
            if m.affine_head == "centroids" else
            f"regression head: a strided encoder {m.affine_features} reads both images and "
            "regresses the matrix") + (
            "; symmetric (`sqrt(A_fm A_mf^-1)`: an identical pair gives the identity, swapped "
            "inputs the inverse)" if m.symmetric else "") + (
            f"; at inference the estimate is applied {m.passes} times, each pass on the moving "
            "image resampled by the transform so far" if m.passes > 1 else "") + (
            "; a pass is kept only if it raises the pair's mutual information on the working "
            "grid (from the identity on), so a pair the network cannot handle comes back "
            "unregistered rather than worse" if m.pass_guard else "") + (
            ". Inference resamples the pair onto an isotropic millimetre grid of the working "
            "grid's shape, padded, not stretched (true proportions for slabs and anisotropic "
            "voxels).")
    return f"""# {name}

**Kind**: {m.kind}, {m.ndim}D{', diffeomorphic (scaling and squaring, ' + str(m.integration_steps) + ' steps)' if m.diffeomorphic and m.kind != 'affine' else ''}.
**Working grid**: inputs are resampled to {d.shape} (array order){f', the network runs at {m.working_scale:g} of that' if m.working_scale != 1 else ''}; the field is upsampled to the fixed image's grid.
**Input**: {INPUTS[m.kind]}. Intensities are normalised to 0..1 by the 1st and 99th percentiles.{architecture}

## Training
- Data: {source}; {f'deformation std up to {d.velocity_std} voxels' if d.deformable else 'no deformation'}{f', affine up to {d.rotation} deg rotation, {d.scale} scale, {d.translation} voxels translation' if d.affine else ''}; {'same' if d.same_contrast else 'independent random'} contrasts for fixed and moving{augment}.
- Loss: {lo.similarity_weight} x {lo.similarity} + {lo.regularization_weight} x {lo.regularizer} + {lo.dice_weight} x Dice (labels) + {lo.supervised_weight} x field error (ground truth){' ; similarity weighted by the joint saliency map' if lo.saliency_weighting else ''}.
- Optimiser: AdamW, lr {cfg.optim.lr}{milestones}, {meta['step']} steps of batch {cfg.optim.batch_size}, seed {cfg.seed}, device {cfg.device}.
- Wall time and hardware: {hardware}; curves in `bench/results/training/{recipe}.png`.
- Recipe: `src_core/deepreg_core/zoo/recipes/{recipe}.yaml`; reproduce with `bash bench/train_chunks.sh {recipe}` repeated (9-minute resumable chunks) or `bash bench/train_zoo.sh {recipe if recipe == name else recipe + ':' + name}` in one go.{init}{limits}
- Last training loss: {last_train.get('loss', float('nan')):.4g}; last validation: {', '.join(f'{k} {v:.4g}' for k, v in last_val.items() if k != 'step') or 'n/a'}.
- Package version {meta.get('package_version')}, checkpoint format {meta.get('format_version')}.

## Evaluation (on cases never used in training)
{EVAL_START}
{evaluation}
{EVAL_END}
""" + (f"\n{after}\n" if after else "")


def main(run: str, name: str) -> None:
    ckpt = latest_checkpoint(run)
    target = ZOO / name
    card = target / "card.md"
    old = card.read_text() if card.exists() else ""
    # the zoo's config keeps the recipe's output folder, not this machine's run folder
    staged = Path(tempfile.mkdtemp(prefix=".publish-", dir=ZOO))
    try:
        shutil.copyfile(ckpt / WEIGHTS, staged / WEIGHTS)
        cfg = load_config(ckpt / CONFIG)
        save_config(cfg.model_copy(update={"output_dir": Path(f"runs/{name}")}), staged / CONFIG)
        zoo.publish(staged, target, card_text(name, ckpt, old, Path(run).name), name=name)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    print(f"published {ckpt} -> {target}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
