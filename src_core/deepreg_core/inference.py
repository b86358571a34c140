"""Register a pair of images with pretrained networks, optionally refined by instance optimisation.

``register(fixed, moving, model=...)`` is the one entry point; ``register_iter`` is the same job as
a generator of :mod:`~deepreg_core.events` so that the CLI, the tests and the napari plugin can show
progress and stop it (see ``docs/architecture.md``, "The inference contract").

Pipeline
--------
1. The moving image is resampled onto the fixed image's grid through both images' world affines
   (any size, spacing and orientation), and both are normalised to [0, 1] by robust percentiles.
2. Each network stage (affine, deformable, global-to-local) runs on its own working grid (the grid
   it was trained on); its field is upsampled to the fixed grid and composed with the previous ones.
   Before zoo deformable networks the zoo's affine network gives the pair an affine start when
   that raises the match (``Preset.affine_start``); with refinement, the refinement's affine
   levels run from the identity and from that start, and the better end is kept.
3. Instance optimisation (``refine_steps > 0``, :mod:`deepreg_core.optimize`) refines the
   result coarse to fine: a global affine first, then residual stationary velocity fields composed
   onto the networks' field, so a diffeomorphic network result stays diffeomorphic. After an
   affine model alone, refinement stays affine.
4. Everything comes back on the fixed grid, in the fixed image's physical space.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from deepreg_core.device import resolve_device
from deepreg_core.events import Event, Finished, Progress, Started, Stopped, StopToken
from deepreg_core.image import Image
from deepreg_core.preprocess import normalize_intensity, resize_image
from deepreg_core.zoo.spec import LoadedModel

SALIENCY_MAX_VOXELS = 1_000_000  # grid the joint-saliency map is computed on (then upsampled)
GUARD_TOLERANCE = 0.01  # relative drop of mutual information that counts as "worse than input"


@dataclass(frozen=True)
class Preset:
    """What a named preset sets: the refinement cap, early stopping and the fallback.

    Attributes
    ----------
    refine_steps : int
        Refinement budget ``N`` (:func:`deepreg_core.optimize.schedule`); a cap when
        ``tolerance`` is set.
    tolerance : float or None
        Early stopping of each refinement level (:class:`deepreg_core.optimize.Plateau`).
    fallback : bool
        Never return a result that matches worse than the input by the guard's measure (mutual
        information, :data:`GUARD_TOLERANCE`). With refinement: when the networks' result
        matches worse than its start, refine from the identity (or the affine stage) instead,
        and keep whichever of the candidates matches best. Without (``fast``): a networks'
        field that matches worse than its start (the affine stage, or the input) is not used;
        the start is the result (an identical pair stays exactly still).
    affine_start : bool
        With deformable zoo (or folder) models only, the zoo's affine network aligns the pair
        first when its estimate moves the pair (half a voxel somewhere) to a higher mutual
        information. With refinement, the affine levels (run before the networks) then run
        twice, from the identity and from that estimate, and the end with the higher mutual
        information is kept: large rotations, which the levels from the identity can miss, are
        the affine network's strength. Without refinement (``fast``) the estimate is the
        deformable networks' start. Not with landmarks, a bare network passed as ``model``, or
        ``refine_affine=False`` (the caller says the pair is affinely aligned).
    """

    refine_steps: int
    tolerance: float | None
    fallback: bool
    affine_start: bool = False


PRESETS: dict[str, Preset] = {
    # network(s) only: one forward pass
    "fast": Preset(refine_steps=0, tolerance=None, fallback=True, affine_start=True),
    # the default: networks, then refinement that stops each level when it stops paying
    "auto": Preset(refine_steps=60, tolerance=2e-3, fallback=True, affine_start=True),
    # a larger budget and a stricter plateau test
    "accurate": Preset(refine_steps=150, tolerance=2e-4, fallback=True, affine_start=True),
}


@dataclass(frozen=True)
class RegistrationResult:
    """Everything a registration produced, on the fixed image's grid.

    Attributes
    ----------
    warped : Image
        The moving image resampled onto the fixed grid and warped, original intensities.
    displacement : ndarray, shape (ndim, *fixed.shape)
        Total transform, fixed voxel ``x`` to ``x + u(x)`` in the moving image resampled on the
        fixed grid, in fixed voxels (array axis order).
    affine : ndarray, shape (ndim + 1, ndim + 1), or None
        The affine stage's matrix (fixed voxel to fixed-grid moving voxel), when one ran.
    jacobian : ndarray, shape fixed.shape, or None
        Jacobian determinant of ``x + u(x)`` (central differences); None with ``qa=False``.
    folds : ndarray of uint8, shape fixed.shape, or None
        1 where any one-sided stencil gives ``det <= 0`` (a fold); None with ``qa=False``.
    folding_fraction : float
        Fraction of voxels where any one-sided stencil gives ``det <= 0`` (NaN with ``qa=False``).
    saliency : ndarray, shape fixed.shape, or None
        Joint saliency of the fixed and the warped image, 0..1; None with ``qa=False``.
    metrics : dict
        ``ncc_before/after``, ``mi_before/after``, ``dice_before/after``, ``tre_before_mm/after_mm``,
        ``folding_percent``, ``worse_than_input`` (1.0 or 0.0), ``seconds``.
    warnings : tuple of str
        What the guard found: the measures that got worse than the unregistered pair. Empty when
        the result is at least as good as doing nothing.
    notes : tuple of str
        Fallbacks the preset took on the way (e.g. a network result that matched worse than its
        input was not used to seed the refinement), and the affine network's start when the
        result used it (``Preset.affine_start``).
    preset : str
        The preset that set the defaults (``"fast"``, ``"auto"``, ``"accurate"``).
    """

    fixed: Image
    warped: Image
    displacement: np.ndarray
    affine: np.ndarray | None
    jacobian: np.ndarray | None
    folding_fraction: float
    saliency: np.ndarray | None
    metrics: dict[str, float]
    model_name: str
    device: str
    seed: int
    warped_labels: Image | None = None
    warped_points: np.ndarray | None = None
    moving_on_fixed: Image | None = field(default=None, repr=False)
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    preset: str = "auto"
    folds: np.ndarray | None = field(default=None, repr=False)

    @property
    def displacement_mm(self) -> np.ndarray:
        """The displacement in mm along the fixed array axes, shape ``(ndim, *fixed.shape)``."""
        spacing = np.asarray(self.fixed.spacing, dtype=np.float32)
        return self.displacement * spacing.reshape((-1,) + (1,) * self.fixed.ndim)


# --------------------------------------------------------------------------------------------
# input checks and models


MAX_REFINE_STEPS = 100_000
"""The largest refinement budget accepted (each step is a full-resolution pass)."""
MAX_REGULARIZATION = 1e6
"""The largest refinement regularisation weight accepted (as ``LossConfig``'s)."""


def _check_extras(fixed: Image, moving: Image, fixed_labels, moving_labels, fixed_points,
                  moving_points) -> None:
    """Check labels and points before any work: shapes, and that each reference has its pair."""
    for name, labels, image in (("fixed_labels", fixed_labels, fixed),
                                ("moving_labels", moving_labels, moving)):
        if labels is None:
            continue
        if not isinstance(labels, Image):
            raise TypeError(f"{name}: expected an Image or None, got {type(labels).__name__}.")
        if labels.shape != image.shape:
            raise ValueError(
                f"{name}: expected the {name.split('_')[0]} image's shape {image.shape}, got "
                f"{labels.shape}."
            )
    if fixed_labels is not None and moving_labels is None:
        raise ValueError(
            "fixed_labels: given without moving_labels; Dice compares the warped moving labels "
            "with the fixed labels, so pass both (or moving_labels alone to warp them)."
        )
    if fixed_points is not None and moving_points is None:
        raise ValueError(
            "fixed_points: given without moving_points; the landmark error needs both (or "
            "moving_points alone to map them)."
        )
    if moving_points is not None:
        pts = np.asarray(moving_points)
        if pts.ndim != 2 or pts.shape[1] != fixed.ndim:
            raise ValueError(
                f"moving_points: expected an array (N, {fixed.ndim}) of voxel indices, got "
                f"{pts.shape}."
            )
        if fixed_points is not None and np.shape(fixed_points) != pts.shape:
            raise ValueError(
                f"fixed_points: expected the same shape as moving_points {pts.shape}, got "
                f"{np.shape(fixed_points)}."
            )
        if not np.all(np.isfinite(pts.astype(np.float64))):
            raise ValueError("moving_points: expected finite voxel indices.")


def _check_pair(fixed: Image, moving: Image) -> None:
    for name, img in (("fixed", fixed), ("moving", moving)):
        if not isinstance(img, Image):
            raise TypeError(
                f"{name}: expected a deepreg_core.image.Image, got {type(img).__name__}. "
                "Build one with Image.from_array(array, spacing=...) or io.read_image(path)."
            )
        if img.data.size == 0 or min(img.shape) < 2:
            raise ValueError(f"{name}: expected an image at least 2 voxels wide, got {img.shape}.")
        if not np.all(np.isfinite(img.data)):
            raise ValueError(
                f"{name}: expected finite values, got {int((~np.isfinite(img.data)).sum())} "
                "NaN or infinite voxel(s). Replace them (e.g. numpy.nan_to_num) first."
            )
    if fixed.ndim != moving.ndim:
        raise ValueError(
            f"fixed and moving must have the same dimensionality: got a {fixed.ndim}D fixed image "
            f"{fixed.shape} and a {moving.ndim}D moving image {moving.shape}. Pick two 2D or two "
            "3D images (take a slice of the volume for a 2D pair)."
        )


def resolve_models(model, ndim: int, preset: str | None = None) -> list[LoadedModel]:
    """Turn the ``model`` argument into loaded models with their specs, checked against ``ndim``.

    Zoo names (and kinds, ``"affine+deformable"``; ``"auto"`` as :func:`deepreg_core.zoo.
    resolve_name` maps it for ``preset``) are loaded; loaded models and networks pass
    through. A caller registering many pairs resolves once and passes the list on (loading a
    model costs far more than running it on a small pair).
    """
    from deepreg_core import zoo
    from deepreg_core.zoo.spec import LoadedModel, ModelSpec

    if isinstance(model, LoadedModel):
        found = [model]
    elif isinstance(model, torch.nn.Module):
        found = [LoadedModel(model, ModelSpec.of_network(model))]
    elif isinstance(model, (list, tuple)):
        return [m for item in model for m in resolve_models(item, ndim, preset)]
    elif "+" in str(model):
        return [m for part in str(model).split("+")
                for m in resolve_models(part.strip(), ndim, preset)]
    else:
        found = [zoo.load(zoo.resolve_name(str(model), ndim, preset))]
    for loaded in found:
        if loaded.spec.ndim != ndim:
            raise ValueError(
                f"model {loaded.name!r} registers {loaded.spec.ndim}D images but the pair is "
                f"{ndim}D. Choose one of: "
                f"{', '.join(zoo.list_models(ndim=ndim)) or 'no model for this ndim'}."
            )
    return found


@dataclass(frozen=True)
class RegisterOptions:
    """The validated options of one registration (what :func:`register_iter` was asked for).

    Built by :meth:`build` from the keyword arguments; every bound is checked there, before any
    work (or any file) is touched.
    """

    preset: str
    chosen: Preset
    steps: int
    tolerance: float | None
    deadline: float | None
    refine_affine: bool
    regularization: float | None
    similarity: str | None
    qa: bool
    device: str
    seed: int
    start: float
    affine_start: bool = False
    fallback: bool = True

    @classmethod
    def build(cls, *, preset: str = "auto", refine_steps: int | None = None,
              tolerance: float | None = None, time_budget: float | None = None,
              refine_affine: bool = True, regularization: float | None = None,
              similarity: str | None = None, qa: bool = True, device: str = "auto",
              seed: int = 0, start: float | None = None,
              affine_start: bool | None = None, fallback: bool | None = None) -> RegisterOptions:
        """Validate and resolve the preset's defaults; ValueError says what is wrong."""
        start = time.perf_counter() if start is None else start
        if regularization is not None and not 0 <= float(regularization) <= MAX_REGULARIZATION:
            raise ValueError(
                f"regularization: expected a weight in [0, {MAX_REGULARIZATION:g}] (0: none; "
                f"larger: smoother), got {regularization}. A negative weight rewards folding."
            )
        if preset not in PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}.")
        chosen = PRESETS[preset]
        if refine_steps is None:
            steps, tol = chosen.refine_steps, chosen.tolerance
        else:
            steps, tol = int(refine_steps), None
        tol = tolerance if tolerance is not None else tol
        if not 0 <= steps <= MAX_REFINE_STEPS:
            raise ValueError(
                f"refine_steps: expected an integer in [0, {MAX_REFINE_STEPS}], got "
                f"{refine_steps}. Use time_budget to bound a long refinement by seconds."
            )
        if time_budget is not None and not time_budget > 0:
            raise ValueError(f"time_budget: expected seconds > 0, got {time_budget}.")
        return cls(preset=preset, chosen=chosen, steps=steps, tolerance=tol,
                   deadline=None if time_budget is None else start + float(time_budget),
                   refine_affine=bool(refine_affine), regularization=regularization,
                   similarity=similarity, qa=bool(qa), device=device, seed=int(seed),
                   start=start, affine_start=chosen.affine_start if affine_start is None
                   else bool(affine_start),
                   fallback=chosen.fallback if fallback is None else bool(fallback))


# --------------------------------------------------------------------------------------------
# the job


def register_iter(
    fixed: Image,
    moving: Image,
    *,
    model="auto",
    preset: str = "auto",
    refine_steps: int | None = None,
    tolerance: float | None = None,
    time_budget: float | None = None,
    refine_affine: bool = True,
    affine_start: bool | None = None,
    fallback: bool | None = None,
    regularization: float | None = None,
    similarity: str | None = None,
    qa: bool = True,
    device: str = "auto",
    fixed_labels: Image | None = None,
    moving_labels: Image | None = None,
    fixed_points: np.ndarray | None = None,
    moving_points: np.ndarray | None = None,
    seed: int = 0,
    landmark_holdout: int = 0,
    stop: StopToken | None = None,
) -> Iterator[Event]:
    """Register ``moving`` to ``fixed``, yielding progress events; ends with ``Finished(result)``.

    Parameters
    ----------
    fixed, moving : Image
        2D or 3D images, any shape, spacing and orientation (their world affines place them).
    model : str, nn.Module or list
        A zoo name (``"deformable-3d"``), ``"affine"``/``"deformable"``/``"global-local"`` (the zoo
        model of that kind for the pair's dimensionality), ``"affine+deformable"``, a model folder,
        or a built model. Stages run in order and compose. ``"rigid"``: no network, rigid
        refinement only (rotation + translation in mm; use a preset with refinement). A first stage
        ``"landmarks-rigid"``/``-similarity``/``-affine``/``-tps`` fits that transform to
        ``fixed_points``/``moving_points`` (:mod:`deepreg_core.landmarks`) and starts from it
        (``"landmarks-affine+deformable"``: then the network); the refinement then adds a
        landmark term, so it stays close to the points while it matches the images.
    preset : {"auto", "fast", "accurate"}
        ``"auto"`` (default): the networks, then refinement whose levels stop when the similarity
        stops improving (cap :data:`PRESETS` ``["auto"].refine_steps``), with the fallback below.
        ``"fast"``: the networks only. ``"accurate"``: a larger cap and a stricter stop.
    refine_steps : int, optional
        Overrides the preset's refinement budget (0 = networks only, with the fallback unless
        ``fallback=False``). Given explicitly, every step
        runs (no early stopping) unless ``tolerance`` is given too; see
        :func:`deepreg_core.optimize.schedule` for how it is split over the levels.
    tolerance : float, optional
        Overrides the preset's early-stopping tolerance (relative loss gain per window).
    time_budget : float, optional
        Seconds from the start of the call after which refinement stops where it is.
    refine_affine : bool
        Start the refinement with global affine levels (default). Turn it off for pairs that are
        affinely aligned already (e.g. both in a template space).
    affine_start : bool, optional
        Overrides the preset's :attr:`Preset.affine_start` (on in every preset): with deformable
        zoo models only, the zoo's affine network (``affine-2d``/``affine-3d``) gives the pair
        an affine start when that raises the mutual information; with refinement, the affine
        levels run from the identity and from that start and the better end is kept. Off (or
        ``refine_affine=False``): exactly the deformable networks, and the affine levels from the
        identity.
    fallback : bool, optional
        Overrides the preset's :attr:`Preset.fallback` (on in every preset): ``False`` returns
        the method's result even when it matches worse than the input (the guard still warns);
        what the model cards' "network only" rows measure.
    regularization : float, optional
        Weight of the diffusion penalty on the refinement's residual velocity (default
        ``optimize.DEFAULT_REGULARIZATION``); larger is smoother.
    similarity : {"mse", "ncc", "lncc", "mi"}, optional
        Similarity for refinement (default: the model's training similarity).
    qa : bool
        Compute the quality maps (Jacobian determinant, folding, joint saliency). ``False``
        skips them (``jacobian``/``saliency`` are None, folding NaN) when only the transform
        is wanted.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    fixed_labels, moving_labels : Image, optional
        Label maps on the fixed and moving grids, for Dice before and after.
    fixed_points, moving_points : ndarray, shape (N, ndim), optional
        Corresponding landmarks in voxel indices of the fixed and moving image: for TRE (mm),
        and fitted with a ``landmarks-*`` model.
    seed : int
        Seed for every random number used (recorded in the result).
    landmark_holdout : int
        With a ``landmarks-*`` model: this many point pairs (drawn with ``seed``) are left out
        of the fit and the refinement, and their error is reported as
        ``tre_holdout_before_mm``/``tre_holdout_after_mm``.
    stop : StopToken, optional
        Checked at every step; when set the job ends with ``Stopped``.

    Notes
    -----
    The guard: the result's mutual information with the fixed image is compared with the
    unregistered pair's (and Dice / TRE when labels / points are given). A result that is worse
    is reported in ``result.warnings`` and ``metrics["worse_than_input"]``; fallbacks taken, and
    an affine start the result used, are in ``result.notes`` (``result.model_name`` then names the
    affine network too; the ``Started`` event names the requested models). With the fallback (on
    in every preset, ``fallback=False`` turns it off), a network result worse than its start is
    not used (``result.model_name`` then reads ``"<what the result came from>; <networks> not
    used"``, e.g. ``"identity; deformable-3d not used"``): without refinement the start (the
    affine stage, or the input) is the result; with refinement it is the refinement's seed
    instead, a refined result worse than the input is refined again from the fallback's start,
    and the best-matching candidate — the unregistered pair included — is kept (and named).
    Landmarks are never overruled by it.
    """
    from deepreg_core import landmarks, losses, optimize, spatial

    t0 = time.perf_counter()
    stop = stop or StopToken()
    _check_pair(fixed, moving)
    _check_extras(fixed, moving, fixed_labels, moving_labels, fixed_points, moving_points)
    opts = RegisterOptions.build(
        preset=preset, refine_steps=refine_steps, tolerance=tolerance, time_budget=time_budget,
        refine_affine=refine_affine, regularization=regularization, similarity=similarity, qa=qa,
        device=device, seed=seed, start=t0, affine_start=affine_start, fallback=fallback)
    steps, tol, deadline = opts.steps, opts.tolerance, opts.deadline
    ndim = fixed.ndim
    dev = resolve_device(device)
    torch.manual_seed(seed)
    landmark_kind, model = _landmark_stage(model)
    rigid = isinstance(model, str) and model.strip().lower() == RIGID
    if rigid:  # no network: the refinement's affine levels, kept rigid, are the method
        model = []
    guide = _landmark_fit(landmark_kind, fixed, moving, fixed_points, moving_points,
                          landmark_holdout, seed) if landmark_kind else None
    stages = resolve_models(model, ndim, opts.preset)
    affine_only = all(stage.spec.is_affine for stage in stages) and landmark_kind != "tps"
    levels = optimize.schedule(steps, fixed.shape, affine_only=affine_only, affine=refine_affine)
    # Deformable networks expect a roughly aligned pair (their cards say so): without an affine
    # network, the refinement's affine levels run first (from the identity and, with a starter,
    # from the affine network's estimate) and the networks see the affinely aligned moving
    # image; the deformable levels follow the networks.
    affine_stage = any(stage.spec.is_affine for stage in stages)
    pre_affine = [] if affine_only or guide or affine_stage \
        else [level for level in levels if level.kind == "affine"]
    post_levels = [level for level in levels if level not in pre_affine]
    # the zoo's affine network as a start (Preset.affine_start): before zoo (or folder) deformable
    # models only, not before a bare network the caller built, and not when the caller says the
    # pair is affinely aligned already (refine_affine=False)
    deformable_only = bool(stages) and not affine_stage \
        and all(stage.config is not None for stage in stages)
    starter = _affine_starter(ndim) if opts.affine_start and refine_affine and deformable_only \
        and guide is None else None
    pre_steps = sum(level.steps for level in pre_affine)
    total = len(stages) + bool(guide) + sum(level.steps for level in levels) + 1 \
        + (1 + pre_steps if starter is not None else 0)
    names = "+".join(([f"landmarks-{landmark_kind}"] if guide else []) + ([RIGID] if rigid else [])
                     + [stage.name for stage in stages])
    yield Started(total_steps=total, config={"model": names, "preset": preset,
                                             "refine_steps": steps, "tolerance": tol,
                                             "device": str(dev), "seed": seed})

    moving_on_fixed, f, m = _prepare(fixed, moving, dev)
    u = torch.zeros((1, ndim) + tuple(fixed.shape), device=dev)
    affine, u_affine = None, None
    step = 0
    sim_name = similarity or (stages[-1].spec.similarity if stages else "lncc")
    refine_options: dict[str, Any] = dict(
        similarity=sim_name, regularization=regularization, stop=stop, total=total, tolerance=tol,
        deadline=deadline, landmarks=None,
        rigid_spacing=tuple(fixed.spacing) if rigid else None)
    if guide is not None:  # the landmarks' transform starts it all, and guides the refinement
        u = u_affine = torch.from_numpy(
            landmarks.displacement_on_grid(guide.transform, fixed))[None].to(dev)
        affine = guide.voxel_matrix
        refine_options["landmarks"] = optimize.Landmarks(
            torch.from_numpy(guide.points).float().to(dev),
            torch.from_numpy(guide.targets).float().to(dev))
        step += 1
        yield Progress(step=step, total=total,
                       message=f"landmarks ({guide.transform.kind}, {len(guide.points)} pairs, "
                               f"residual {guide.transform.residual_mm:.2f} mm)")

    # the fixed side of the histogram is the same for every score: computed once
    mi_to_fixed = losses.ReferenceMutualInformation(f, max_voxels=losses.MI_MAX_VOXELS)
    scored: list[tuple[torch.Tensor | None, float]] = []  # the last fields scored

    def score(field: torch.Tensor | None) -> float:
        """Mutual information of the fixed image and the moving one warped by ``field``."""
        for seen, value in scored:
            if seen is field:  # the same tensor (e.g. the affine start that is also the stage)
                return value
        with torch.no_grad():
            moved = m if field is None else spatial.warp(m, field, padding="zeros")
            value = -float(mi_to_fixed(moved))
        scored[:] = [*scored[-2:], (field, value)]
        return value

    notes: list[str] = []
    mi_input = score(None)
    # the affine network's name, field and matrix, when it moves the pair to a better match
    started: tuple[str, torch.Tensor, np.ndarray | None] | None = None
    if starter is not None:
        ran = yield from _run_networks([starter], f, m, (u, None, None), step, total, stop,
                                       tuple(fixed.spacing),
                                       message=f"affine start ({starter.name})")
        if ran is None:
            yield Stopped(step=step, checkpoint=None)
            return
        (u_net, net_affine, _), step = ran
        # half a voxel somewhere at least: an estimate of about the identity is no start
        mi_net = score(u_net) if float(u_net.abs().max()) > 0.5 else -math.inf
        if mi_net > mi_input:
            started = (f"the {starter.name} network", u_net, net_affine)
    if pre_affine:
        # the affine levels from the identity and from the affine network's estimate; the end
        # that matches better is kept (choosing after the coarsest level alone lost the
        # network's gain on thin slabs)
        starts: list[tuple[str, torch.Tensor, np.ndarray | None]] = [("the identity", u, None)]
        if started is not None:
            starts.append(started)
        elif starter is not None:
            step += pre_steps  # the second start is not run
        ends = []
        for start_name, start_u, start_affine in starts:
            refined = yield from _refined(optimize.refine_iter(
                f, m, start_u, steps=steps, levels=pre_affine, step0=step, **refine_options))
            if refined is None:
                yield Stopped(step=step, checkpoint=None)
                return
            step += pre_steps
            matrix = refined.affine.numpy()
            ends.append((score(refined.displacement), start_name, refined.displacement,
                         matrix if start_affine is None else start_affine @ matrix))
        kept = max(ends, key=lambda end: end[0])  # the identity's on a tie
        started = started if kept is ends[-1] and len(ends) > 1 else None
        if started is not None:  # the result is not the one the identity's start gives
            notes.append(f"the affine levels started from {kept[1]} (mutual information "
                         + ", ".join(f"{end[0]:.3f} from {end[1]}" for end in ends) + ")")
        u = u_affine = kept[2]
        affine = kept[3]
    elif started is not None:  # no affine levels (no refinement): the network's estimate
        notes.append(f"{started[0]} aligned the pair first (mutual information "
                     f"{mi_input:.3f} -> {mi_net:.3f})")
        u = u_affine = started[1]
        affine = started[2]
    if started is not None and starter is not None:
        names = f"{starter.name}+{names}"
    ran = yield from _run_networks(stages, f, m, (u, affine, u_affine), step, total, stop,
                                   tuple(fixed.spacing))
    if ran is None:
        yield Stopped(step=step, checkpoint=None)
        return
    (u, affine, u_affine), step = ran
    # what refinement falls back to: the affine stage when it matches at least as well as the
    # input, else the identity
    mi_affine = score(u_affine) if u_affine is not None else None
    affine_ok = mi_affine is not None and mi_affine >= mi_input * (1 - GUARD_TOLERANCE)
    fallback_start: tuple[torch.Tensor, np.ndarray | None] = (
        (u_affine, affine) if affine_ok and u_affine is not None else (torch.zeros_like(u), None))
    fallback_name = "the affine stage" if affine_ok else "the identity"
    reference = mi_affine if affine_ok and mi_affine is not None else mi_input
    # landmarks are the user's statement of correspondence: no similarity overrules them
    use_fallback = opts.fallback and guide is None
    if use_fallback and stages and u is not fallback_start[0]:
        mi_networks = score(u)
        # worse than its start, or than the input (an affine stage the guard tolerates may sit
        # just below the input: the result must not fall further)
        if mi_networks < max(reference, mi_input) * (1 - GUARD_TOLERANCE):
            # the networks made the pair worse: their field neither seeds the refinement nor,
            # without refinement, is the result
            notes.append(f"the network result matched worse than its start, {fallback_name} "
                         f"(mutual information {mi_networks:.3f} vs {reference:.3f}); "
                         + (f"refinement started from {fallback_name}" if steps
                            else f"kept {fallback_name}"))
            u, affine = fallback_start
            names = _names_without(names, stages, starter, affine_ok, steps > 0)

    if steps:
        def refine(start: torch.Tensor, start_affine, base: int):
            refined = yield from _refined(optimize.refine_iter(
                f, m, start, steps=steps, levels=post_levels, affine_only=affine_only,
                step0=base, **refine_options))
            if refined is None:  # stopped
                return None
            if affine_only:  # keep it exactly affine: one matrix, one field computed from it
                start_matrix = start_affine if start_affine is not None else np.eye(ndim + 1)
                matrix = start_matrix @ refined.affine.numpy()
                tensor = torch.from_numpy(matrix).float()[None].to(dev)
                return spatial.affine_to_displacement(tensor, fixed.shape), matrix
            return refined.displacement, start_affine

        found = yield from refine(u, affine, step)
        if found is None:
            yield Stopped(step=step, checkpoint=None)
            return
        candidates = [(score(found[0]), "refined", found)]
        if use_fallback and candidates[0][0] < mi_input * (1 - GUARD_TOLERANCE):
            if u is not fallback_start[0]:  # it was seeded by a network: try again without it
                again = yield from refine(fallback_start[0], fallback_start[1], step)
                if again is None:
                    yield Stopped(step=step, checkpoint=None)
                    return
                candidates.append((score(again[0]), f"refined from {fallback_name}", again))
            candidates.append((mi_input, "the unregistered input", (torch.zeros_like(u), None)))
            best = max(candidates, key=lambda c: c[0])
            notes.append(f"the refined result matched worse than the input; kept {best[1]}")
            if best[1] == "the unregistered input":
                unused = names.split("; ")[-1].removesuffix(" not used") if "; " in names \
                    else names
                names = "identity; " + ", ".join(
                    [part for part in (unused, "refinement") if part]) + " not used"
            elif best[1] != "refined":  # refined again from the fallback's start
                names = _names_without(names, stages, starter, affine_ok, True)
            candidates = [best]
        u, affine = candidates[0][2]
        step = total - 1

    result = _assess(
        fixed, moving, moving_on_fixed, f, m, u, affine, opts,
        labels=(fixed_labels, moving_labels), points=(fixed_points, moving_points),
        mi_input=mi_input, notes=notes, names=names, device=dev, mi_after=score(u))
    if guide is not None and len(guide.held_out):
        held = guide.held_out
        _, held_values = _points(np.asarray(moving_points)[held], moving, fixed,
                                 np.asarray(fixed_points)[held], u)
        result.metrics.update({k.replace("tre_", "tre_holdout_"): v
                               for k, v in held_values.items()})
    yield Progress(step=total, total=total, message="done")
    yield Finished(result=result)


_STARTERS: dict[tuple[int, str, float], LoadedModel] = {}


def _affine_starter(ndim: int) -> LoadedModel | None:
    """The zoo's affine network for ``ndim``-D pairs, or None when the zoo has none (or it is
    broken: a deformable registration does not fail for it).

    Loaded once per weights file (path and modification time), so a series or a batch does not
    load it per pair; a model published again under the name is loaded again.
    """
    from deepreg_core import zoo

    try:
        entry = zoo.get(zoo.resolve_name("affine", ndim))
        key = (ndim, str(entry.path), (entry.path / "weights.safetensors").stat().st_mtime)
    except (ValueError, OSError):
        return None
    if key not in _STARTERS:
        if entry.problem() is not None:
            return None
        for old in [k for k in _STARTERS if k[0] == ndim]:  # one per ndim: the current one
            del _STARTERS[old]
        _STARTERS[key] = zoo.load(entry.path)
    return _STARTERS[key]


def _prepare(fixed: Image, moving: Image,
             device: torch.device) -> tuple[Image, torch.Tensor, torch.Tensor]:
    """The moving image on the fixed grid (world coordinates), and both normalised tensors."""
    from deepreg_core import spatial

    moving_on_fixed = spatial.resample_to(moving, fixed, mode="linear", padding="zeros")
    f = torch.from_numpy(normalize_intensity(fixed.data))[None, None].to(device)
    m = torch.from_numpy(normalize_intensity(moving_on_fixed.data))[None, None].to(device)
    return moving_on_fixed, f, m


def _names_without(names: str, stages: list[LoadedModel], starter: LoadedModel | None,
                   affine_ok: bool, refined: bool) -> str:
    """The model name once the fallback dropped the networks' field: what the result came from,
    then which networks were not used (``"identity; deformable-3d not used"``).

    An affine network's field stays in the result when the affine stage is the fallback's start
    (``affine_ok``): only the networks after it are dropped; otherwise all are, the affine
    start's network included.
    """
    if "; " in names:  # already named by an earlier fallback
        return names
    dropped = [stage.name for stage in stages if not (affine_ok and stage.spec.is_affine)]
    used = [part for part in names.split("+") if part not in dropped]
    if not affine_ok and starter is not None and starter.name in used:
        used.remove(starter.name)
    used += ["refinement"] if refined else []
    return f"{'+'.join(used) or 'identity'}; {'+'.join(dropped)} not used"


def _run_networks(stages: list[LoadedModel], f: torch.Tensor, m: torch.Tensor,
                  state: tuple[torch.Tensor, np.ndarray | None, torch.Tensor | None], step: int,
                  total: int, stop: StopToken, spacing: Sequence[float] | None = None,
                  message: str | None = None):
    """Run each network on the pair as the transform so far leaves it, composing the fields.

    ``state`` is ``(u, affine, u_affine)``; returns the new state and step, or None when
    stopped. Each network sees the pair on its working grid (its spec), normalised; an affine
    network with ``spacing`` known sees it in the physical frame of :func:`_physical_frame`.
    ``message`` replaces the progress message ("network k/n").
    """
    from deepreg_core import spatial

    u, affine, u_affine = state
    shape = tuple(f.shape[2:])
    for index, stage in enumerate(stages):
        if stop.stopped:
            return None
        net = stage.network.to(f.device).eval()
        work = stage.working_shape(shape)
        with torch.no_grad():
            moved = spatial.warp(m, u, padding="zeros") if bool(u.any()) else m
            if stage.spec.is_affine and spacing is not None:
                frame = _physical_frame(shape, spacing, work)
                out = net(_in_frame(f, frame, work), _in_frame(moved, frame, work))
                affine = frame @ out.affine[0].cpu().double().numpy() @ np.linalg.inv(frame)
                u_stage = spatial.affine_to_displacement(
                    torch.from_numpy(affine[None]).to(f.dtype).to(f.device), shape)
            else:
                out = net(resize_image(f, work), resize_image(moved, work))
                u_stage = spatial.resize_displacement(out.displacement, shape)
                if getattr(out, "affine", None) is not None:
                    affine = _rescale_affine(out.affine[0].detach().cpu().double().numpy(), work,
                                             shape)
        u = spatial.compose(u, u_stage) if bool(u.any()) else u_stage
        if stage.spec.is_affine and u_affine is None:
            u_affine = u
        step += 1
        yield Progress(step=step, total=total,
                       message=message or f"network {index + 1}/{len(stages)}")
    return (u, affine, u_affine), step


def _assess(fixed: Image, moving: Image, moving_on_fixed: Image, f: torch.Tensor,
            m: torch.Tensor, u: torch.Tensor, affine: np.ndarray | None, opts: RegisterOptions, *,
            labels: tuple[Image | None, Image | None],
            points: tuple[np.ndarray | None, np.ndarray | None], mi_input: float,
            notes: list[str], names: str, device: torch.device,
            mi_after: float | None = None) -> RegistrationResult:
    """The last stage: warp, measure before/after, quality maps, the guard, the result.

    ``mi_after``, when the caller has it (the MI of ``f`` and ``m`` warped by ``u``, computed as
    :func:`~deepreg_core.losses.mutual_information` does), is not computed again.
    """
    from deepreg_core import losses, metrics, spatial

    dev = device
    fixed_labels, moving_labels = labels
    fixed_points, moving_points = points
    with torch.no_grad():
        raw = torch.from_numpy(np.asarray(moving_on_fixed.data, dtype=np.float32))[None, None]
        both = spatial.warp(torch.cat([raw.to(dev), m], dim=1), u, padding="zeros")  # one grid
        warped_raw, warped_n = both[:, :1], both[:, 1:]
        values = {
            "ncc_before": float(losses.ncc(f, m)),
            "ncc_after": float(losses.ncc(f, warped_n)),
            "mi_before": mi_input,
            "mi_after": float(losses.mutual_information(f, warped_n)) if mi_after is None
            else mi_after,
        }
        quality = sal = None
        fold = float("nan")
        if opts.qa:
            quality = metrics.field_quality(u[0].cpu())
            fold = quality.folding_fraction
            sal = _saliency(f, warped_n)
            values["folding_percent"] = 100.0 * fold
    warped_labels = None
    if moving_labels is not None:
        warped_labels, label_metrics = _labels(moving_labels, fixed, fixed_labels, u, dev)
        values.update(label_metrics)
    warped_points = None
    if moving_points is not None:
        warped_points, point_metrics = _points(moving_points, moving, fixed, fixed_points, u)
        values.update(point_metrics)
    worse = guard(values)
    warnings = [f"{what} is worse than before registration" for what in worse]
    values["worse_than_input"] = 1.0 if worse else 0.0
    values["seconds"] = time.perf_counter() - opts.start
    return RegistrationResult(
        fixed=fixed,
        warped=fixed.with_data(warped_raw[0, 0].cpu().numpy()),
        displacement=u[0].cpu().numpy().astype(np.float32, copy=False),
        affine=affine,
        jacobian=None if quality is None else quality.jacobian,
        folds=None if quality is None else quality.folds,
        folding_fraction=fold,
        saliency=None if sal is None else sal[0, 0].cpu().numpy().astype(np.float32, copy=False),
        metrics=values,
        model_name=names,
        device=str(dev),
        seed=opts.seed,
        warped_labels=warped_labels,
        warped_points=warped_points,
        moving_on_fixed=moving_on_fixed,
        warnings=tuple(warnings),
        notes=tuple(notes),
        preset=opts.preset,
    )


LANDMARK_PREFIX = "landmarks-"
RIGID = "rigid"
"""``model="rigid"``: no network; the refinement's affine levels restricted to rotations and
translations in physical space (what drift correction of a time series usually wants)."""


def uses_networks(model: object) -> bool:
    """False for the models that are not networks (``"rigid"``, ``"landmarks-..."``)."""
    return not (isinstance(model, str)
                and (model.strip().lower() == RIGID or model.startswith(LANDMARK_PREFIX)))


def _landmark_stage(model):
    """Split a leading ``"landmarks-KIND"`` stage off ``model``: ``(KIND or None, the rest)``."""
    if not isinstance(model, str) or not model.startswith(LANDMARK_PREFIX):
        return None, model
    first, _, rest = model.partition("+")
    kind = first[len(LANDMARK_PREFIX):]
    from deepreg_core.landmarks import KINDS

    if kind not in KINDS:
        raise ValueError(f"model {first!r}: expected one of "
                         f"{', '.join(LANDMARK_PREFIX + k for k in KINDS)}.")
    return kind, rest.strip() or []


@dataclass(frozen=True)
class LandmarkGuide:
    """A landmark fit for one registration: the transform, its points on the fixed grid."""

    transform: Any
    points: np.ndarray  # (N, ndim) fixed voxel indices of the pairs used
    targets: np.ndarray  # (N, ndim) their moving points, in voxels of the fixed grid
    voxel_matrix: np.ndarray | None  # the linear transform, fixed voxel -> fixed-grid voxel
    held_out: np.ndarray  # indices of the pairs left out of the fit


def _landmark_fit(kind, fixed: Image, moving: Image, fixed_points, moving_points, holdout: int,
                  seed: int) -> LandmarkGuide:
    """Fit the landmark transform (before any work): the points' checks and messages."""
    from deepreg_core import landmarks

    if fixed_points is None or moving_points is None:
        raise ValueError(
            f"model 'landmarks-{kind}' fits the transform to landmarks: give fixed_points and "
            "moving_points (CLI: --fixed-points and --moving-points, CSV of voxel indices)."
        )
    fp = np.asarray(fixed_points, dtype=np.float64)
    mp = np.asarray(moving_points, dtype=np.float64)
    count = len(fp)
    holdout = int(holdout)
    if not 0 <= holdout < count:
        raise ValueError(f"landmark_holdout: expected 0 <= n < {count} (the pairs given), got "
                         f"{holdout}.")
    held = np.sort(np.random.default_rng(seed).choice(count, holdout, replace=False)) \
        if holdout else np.zeros(0, dtype=int)
    used = np.setdiff1d(np.arange(count), held)
    transform = landmarks.fit_transform(fixed.index_to_world(fp[used]),
                                        moving.index_to_world(mp[used]), kind)
    matrix = None
    if kind != "tps":
        matrix = np.linalg.inv(fixed.affine) @ transform.matrix @ fixed.affine
    targets = fixed.world_to_index(moving.index_to_world(mp[used]))
    return LandmarkGuide(transform, fp[used], targets, matrix, held)


def _refined(events):
    """Pass on a ``refine_iter``'s progress events; return its ``Refined`` (None when stopped)."""
    from deepreg_core.optimize import Refined

    refined = None
    for event in events:
        if isinstance(event, Refined):
            refined = event
        else:
            yield event
    return refined


def guard(values: dict[str, float]) -> list[str]:
    """The measures in ``values`` that are worse after registration than before.

    Mutual information counts when it falls by more than ``GUARD_TOLERANCE`` (relative); Dice
    when it falls, TRE when it rises (each only when both values are present).

    Examples
    --------
    >>> guard({"mi_before": 0.5, "mi_after": 0.4, "dice_before": 0.7, "dice_after": 0.8})
    ['mutual information']
    """
    worse = []
    if "mi_before" in values and values["mi_after"] < values["mi_before"] * (1 - GUARD_TOLERANCE):
        worse.append("mutual information")
    if "dice_before" in values and values["dice_after"] < values["dice_before"]:
        worse.append("Dice")
    if "tre_before_mm" in values and values["tre_after_mm"] > values["tre_before_mm"]:
        worse.append("landmark error (TRE)")
    return worse


def register(fixed: Image, moving: Image, **kwargs) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` and return the :class:`RegistrationResult`.

    Takes the same arguments as :func:`register_iter`.

    Examples
    --------
    >>> from deepreg_core.io import read_image
    >>> from deepreg_core.inference import register
    >>> result = register(read_image("fixed.nii.gz"), read_image("moving.nii.gz"),
    ...                   model="deformable", refine_steps=50)  # doctest: +SKIP
    >>> result.metrics["ncc_after"] > result.metrics["ncc_before"]  # doctest: +SKIP
    True
    """
    for event in register_iter(fixed, moving, **kwargs):
        if isinstance(event, Finished):
            return event.result
        if isinstance(event, Stopped):
            raise RuntimeError("registration was stopped before it finished")
    raise RuntimeError("registration ended without a result")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# pieces


def _physical_frame(shape: Sequence[int], spacing: Sequence[float],
                    work: Sequence[int]) -> np.ndarray:
    """Work-grid voxel -> fixed voxel: the work grid made isotropic in millimetres, centred.

    The box has the work grid's shape and holds the fixed field of view (its longest side, in
    units of the work grid, sets the voxel size; the other axes are padded), so an affine
    network sees anatomy with its true proportions whatever the scan's voxel size and field of
    view, as it saw the template in training, instead of a field of view stretched to its grid.
    """
    ndim = len(shape)
    extent = [(n - 1) * float(s) for n, s in zip(shape, spacing)]
    mm = max(e / max(w - 1, 1) for e, w in zip(extent, work))
    frame = np.eye(ndim + 1)
    for i in range(ndim):
        frame[i, i] = mm / float(spacing[i])
        frame[i, ndim] = (shape[i] - 1) / 2 - (work[i] - 1) / 2 * frame[i, i]
    return frame


def _in_frame(image: torch.Tensor, frame: np.ndarray, work: Sequence[int]) -> torch.Tensor:
    """``image`` sampled on the work grid of ``frame`` (anti-aliased like ``resize_image``)."""
    from deepreg_core import spatial
    from deepreg_core.preprocess import antialias

    factors = [float(f) for f in np.diag(frame)[:-1]]
    image = antialias(image, factors)
    matrix = torch.from_numpy(frame).to(image.dtype).to(image.device)
    return spatial.resample(image, matrix, tuple(work), padding="zeros")


def _rescale_affine(matrix: np.ndarray, work: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Express a voxel affine found on the working grid on the full grid (align_corners=True)."""
    ndim = len(shape)
    scale = np.ones(ndim + 1)
    scale[:ndim] = [(w - 1) / max(s - 1, 1) for w, s in zip(work, shape)]
    to_work = np.diag(scale)
    return np.linalg.inv(to_work) @ matrix @ to_work


def _saliency(fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
    """Joint saliency, computed on a grid of at most ``SALIENCY_MAX_VOXELS`` and upsampled.

    The structure tensors cost about 1.5 s per million voxels on 2 CPU cores; a heat map needs
    no more than a million voxels (its scales are then relative to that grid).
    """
    from deepreg_core.saliency import joint_saliency

    shape = tuple(fixed.shape[2:])
    factor = min(1.0, (SALIENCY_MAX_VOXELS / float(np.prod(shape))) ** (1.0 / len(shape)))
    if factor == 1.0:
        return joint_saliency(fixed, warped)
    small = tuple(max(8, round(n * factor)) for n in shape)
    sal = joint_saliency(resize_image(fixed, small), resize_image(warped, small))
    return resize_image(sal, shape).clamp(0.0, 1.0)


def _labels(moving_labels, fixed, fixed_labels, u, dev):
    from deepreg_core import metrics, spatial

    on_fixed = spatial.resample_to(moving_labels, fixed, mode="nearest")
    lab = torch.from_numpy(np.asarray(on_fixed.data).astype(np.int64))[None, None].to(dev)
    warped = spatial.warp(lab, u, mode="nearest", padding="zeros")
    out = fixed.with_data(warped[0, 0].cpu().numpy().astype(np.int32))
    values = {}
    if fixed_labels is not None:
        ref = torch.from_numpy(np.asarray(fixed_labels.data).astype(np.int64))
        if tuple(ref.shape) != tuple(fixed.shape):
            raise ValueError(
                f"fixed_labels: expected the fixed image's shape {fixed.shape}, got {ref.shape}."
            )
        values["dice_before"] = float(metrics.mean_dice(ref, lab[0, 0].cpu()))
        values["dice_after"] = float(metrics.mean_dice(ref, warped[0, 0].cpu()))
    return out, values


def _points(moving_points, moving, fixed, fixed_points, u):
    from deepreg_core import spatial

    pts = np.asarray(moving_points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != fixed.ndim:
        raise ValueError(
            f"moving_points: expected an array (N, {fixed.ndim}) of voxel indices, got {pts.shape}."
        )
    # moving voxel -> world -> fixed-grid voxel (where the moving image was resampled)
    on_fixed = fixed.world_to_index(moving.index_to_world(pts))
    inverse = spatial.invert(u.detach().cpu())
    warped = spatial.transform_points(torch.from_numpy(on_fixed).float(), inverse).numpy()
    values = {}
    if fixed_points is not None:
        fp = np.asarray(fixed_points, dtype=np.float64)
        if fp.shape != pts.shape:
            raise ValueError(
                f"fixed_points: expected the same shape as moving_points {pts.shape}, got {fp.shape}."
            )
        spacing = np.asarray(fixed.spacing)
        mapped = spatial.transform_points(torch.from_numpy(fp).float(), u.detach().cpu()).numpy()
        values["tre_before_mm"] = float(np.linalg.norm((on_fixed - fp) * spacing, axis=1).mean())
        values["tre_after_mm"] = float(np.linalg.norm((on_fixed - mapped) * spacing, axis=1).mean())
    return warped.astype(np.float32), values


def apply_transform(result: RegistrationResult, image: Image, *, mode: str = "linear") -> Image:
    """Apply a registration's transform to another image of the moving space (e.g. labels).

    ``image`` is resampled onto the fixed grid through its world affine and warped by
    ``result.displacement``; use ``mode="nearest"`` for label maps (integer dtype is kept).
    """
    from deepreg_core import spatial

    on_fixed = spatial.resample_to(image, result.fixed, mode=mode)
    data = np.asarray(on_fixed.data)
    is_int = mode == "nearest" and np.issubdtype(data.dtype, np.integer)
    tensor = torch.from_numpy(data.astype(np.int64 if is_int else np.float32))[None, None]
    u = torch.from_numpy(result.displacement)[None]
    warped = spatial.warp(tensor, u, mode=mode, padding="zeros")[0, 0].numpy()
    return result.fixed.with_data(warped.astype(data.dtype if is_int else np.float32))
