"""Instance optimisation: refine a transform for one image pair, coarse to fine.

After the networks, ``register(..., refine_steps=N)`` hands their field to :func:`refine_iter`,
which runs a multi-level schedule (ANTs and elastix do the same; so does ConvexAdam after its
network-free initialisation):

1. **Affine levels** (a quarter, then half resolution): a global affine ``B`` in normalised
   coordinates is optimised on top of the current transform. A diffusion regulariser penalises
   the gradient of a displacement, so rotations and scalings left to the deformable levels would
   be shrunk towards identity; recovering them here first is what brings sub-voxel accuracy.
2. **Deformable levels** (a quarter, half, full resolution): the moving image is warped once by
   the current transform and a residual stationary velocity, on a grid half the level's size,
   is optimised for similarity plus a diffusion penalty on the velocity; its exponential is
   composed onto the transform. Every residual is diffeomorphic, so a diffeomorphic network
   result stays diffeomorphic.

Images at coarser levels are blurred before they are sampled (not point-sampled, which aliases).
Levels whose grid would be smaller than ``MIN_LEVEL_SIZE`` voxels on an axis are skipped. The
schedule is a pure function of ``N``, the image shape and whether the result must stay affine
(:func:`schedule`); every step is deterministic for a given input on a given device.

References
----------
Avants et al., "Symmetric diffeomorphic image registration with cross-correlation", MedIA 2008.
Siebert, Hansen, Heinrich, "Fast 3D registration with accurate optimisation and little learning
for Learn2Reg 2021", MICCAI workshops 2021.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from deepreg_core import losses, spatial
from deepreg_core.events import Progress, StopToken
from deepreg_core.preprocess import normalized_to_voxel_affine, resize_image

MIN_LEVEL_SIZE = 12  # voxels per axis on the coarsest deformable level used
AFFINE_SAMPLES = 4096  # voxels the global measure of an affine level is computed on
AFFINE_MIN_VOXELS = 4096  # voxels on the coarsest affine level used (64 x 64, 16 x 16 x 16)
AFFINE_LR = 0.01  # Adam step on the normalised affine parameters
VELOCITY_LR = 0.05  # Adam step on the residual velocity, in its own grid's voxels
AFFINE_WINDOW = 9  # local NCC window (voxels of the level) for the affine levels
# A global transform is driven by a global measure. Mutual information, not global NCC, since
# local NCC (the default) is chosen because contrasts may differ between the images.
AFFINE_SIMILARITY = {"lncc": "mi"}
DEFORMABLE_WINDOW = 5  # local NCC window for the deformable levels
DEFAULT_REGULARIZATION = 0.3  # weight of the diffusion penalty on the residual velocity
INTEGRATION_STEPS = 4
LANDMARK_WEIGHT = 0.05  # weight of the landmark term per squared voxel of mean point distance


@dataclass(frozen=True)
class Landmarks:
    """Landmark pairs for the refinement's landmark term, on the full fixed grid.

    ``points`` ``(N, ndim)`` are fixed voxel indices; ``targets`` ``(N, ndim)`` where each must
    land: the corresponding moving point in voxels of the moving image resampled on the fixed
    grid. The term is ``weight * mean |x + u(x) - y|²`` (voxels²), added to the similarity.
    """

    points: torch.Tensor
    targets: torch.Tensor
    weight: float = LANDMARK_WEIGHT

    def term(self, step_at_points: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The term for a level's step ``s`` (at the points, full voxels ``(N, ndim)``) composed
        before the current field ``base`` ``(1, ndim, *full)``: total ``s(x) + base(x + s(x))``."""
        ndim = self.points.shape[1]
        where = self.points + step_at_points
        coords = where.T.reshape(1, ndim, -1, *[1] * (ndim - 1))
        base_at = spatial.sample_at(base, coords, padding="border").reshape(ndim, -1).T
        error = where + base_at - self.targets
        return self.weight * error.pow(2).sum(dim=1).mean()
PLATEAU_WINDOW = 5  # steps averaged before early stopping compares the loss
# share of the budget N for the deformable levels at 1/4, 1/2 and full resolution: in 3D a
# full-resolution step costs about 8 half-resolution ones, in 2D only 4 and all are cheap
DEFORMABLE_SPLIT = {2: (0.3, 0.4, 0.4), 3: (0.6, 0.4, 0.1)}


@dataclass(frozen=True)
class Refined:
    """What :func:`refine_iter` found.

    Attributes
    ----------
    displacement : Tensor ``(1, ndim, *spatial)``
        The refined total transform (voxels).
    affine : Tensor ``(ndim + 1, ndim + 1)``
        The product of the affine levels' voxel matrices, applied before ``initial``
        (identity when no affine level ran).
    """

    displacement: torch.Tensor
    affine: torch.Tensor


@dataclass(frozen=True)
class Level:
    """One level of the schedule: ``kind`` ("affine" or "deformable"), ``factor``, ``steps``."""

    kind: str
    factor: int
    steps: int


def schedule(steps: int, shape: Sequence[int], *, affine_only: bool = False,
             affine: bool = True) -> list[Level]:
    """The levels ``refine_steps=steps`` runs on an image of ``shape``.

    ``steps`` is the budget of the deformable levels, split 60/40/10 % over a quarter, half and
    full resolution (the full-resolution level is the expensive one); the affine levels take
    ``1.2 steps`` at a quarter and ``0.4 steps`` at half resolution (their steps are cheap).
    With ``affine_only`` the affine levels run at a quarter, half and full resolution instead;
    with ``affine=False`` there are no affine levels (for pairs known to be affinely aligned).
    A level too small for its measure is skipped and its steps go to the next finer level.
    """
    if steps <= 0:
        return []

    def usable(kind: str, factor: int) -> bool:
        if factor == 1:
            return True
        level = _level_shape(shape, factor)
        if kind == "affine":  # a global measure needs many voxels (MI is noisy on 16 x 16)
            return math.prod(level) >= AFFINE_MIN_VOXELS
        return min(level) >= MIN_LEVEL_SIZE

    def part(fraction: float) -> int:
        return max(1, round(steps * fraction))

    if affine_only:
        plan = [("affine", 4, part(1.2)), ("affine", 2, part(0.6)), ("affine", 1, part(0.2))]
    else:
        split = DEFORMABLE_SPLIT[len(shape)]
        # the full-size affine level only runs with the steps of coarse levels too small to use
        plan = [("affine", 4, part(1.2)), ("affine", 2, part(0.4)), ("affine", 1, 0)] \
            if affine else []
        plan += [("deformable", factor, part(w)) for factor, w in zip((4, 2, 1), split)]
    levels, carried = [], {"affine": 0, "deformable": 0}
    for kind, factor, n in plan:  # a level too small hands its steps to the next finer one
        if usable(kind, factor):
            if n + carried[kind]:
                levels.append(Level(kind, factor, n + carried[kind]))
            carried[kind] = 0
        else:
            carried[kind] += n
    return levels


def _level_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    return tuple(max(2, round(s / factor)) for s in shape)


def _similarity(name: str, window: int) -> torch.nn.Module:
    return losses.get_similarity(name, window=window) if name == "lncc" else \
        losses.get_similarity(name)


def affine_matrix(theta: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Normalised affine ``theta (1, ndim, ndim+1)`` as a voxel matrix of ``shape``."""
    return normalized_to_voxel_affine(theta, shape)


class _Adam:
    """Adam on one tensor; with ``decay``, the step size falls linearly to ``1 - decay`` of itself.

    Decay suits the affine levels (twelve numbers: large moves first, then precision); the
    deformable levels keep their step (decay there made the fields travel too little). Written out (a dozen lines) because constructing
    ``torch.optim.Adam`` imports ``torch._dynamo`` on first use, about 1.1 s of a 2-core CPU
    registration that takes a few seconds in all.
    """

    def __init__(self, param: torch.Tensor, lr: float, steps: int, decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.param, self.lr, self.steps, self.betas, self.eps = param, lr, max(steps, 1), betas, eps
        self.decay = decay
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.k = 0

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        b1, b2 = self.betas
        lr = self.lr * (1.0 - self.decay * min(self.k, self.steps) / self.steps)
        self.k += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        m_hat = self.m / (1 - b1**self.k)
        v_hat = self.v / (1 - b2**self.k)
        self.param.sub_(lr * m_hat / (v_hat.sqrt() + self.eps))
        self.param.grad = None


class Plateau:
    """Early stopping of one level: stop once the loss no longer falls.

    The loss is averaged over consecutive windows of ``window`` steps; from the second window on
    the level stops when a window's mean improves on the best earlier window mean by less than
    ``tolerance * max(|best|, 1e-3)``, or when no window has yet beaten the loss of the very first
    step (the start was already as good as it gets, e.g. an identical pair), or when
    ``deadline`` (a ``time.perf_counter()`` value) has passed. ``tolerance=None`` never stops
    early (a fixed number of steps).

    Examples
    --------
    >>> p = Plateau(tolerance=1e-3, window=2)
    >>> [p.update(v) for v in (1.0, 0.9, 0.5, 0.4, 0.4, 0.4)]
    [False, False, False, False, False, True]
    """

    def __init__(self, tolerance: float | None, window: int = PLATEAU_WINDOW,
                 deadline: float | None = None) -> None:
        self.tolerance, self.window, self.deadline = tolerance, max(1, window), deadline
        self.best: float | None = None
        self.first: float | None = None
        self.current: list[float] = []

    def update(self, loss: float) -> bool:
        """Record one step's loss; True when the level should stop now."""
        if self.deadline is not None and time.perf_counter() > self.deadline:
            return True
        if self.tolerance is None:
            return False
        if self.first is None:
            self.first = float(loss)
        self.current.append(float(loss))
        if len(self.current) < self.window:
            return False
        mean = sum(self.current) / len(self.current)
        self.current = []
        if self.best is None:
            self.best = mean
            return False
        gain = self.best - mean
        self.best = min(self.best, mean)
        return gain < self.tolerance * max(abs(self.best), 1e-3) or self.best >= self.first


def rigid_theta(params: torch.Tensor, half_extent: torch.Tensor) -> torch.Tensor:
    """Normalised ``theta (1, ndim, ndim + 1)`` of a rigid motion in physical space.

    ``params`` holds the angles (1 in 2D, 3 in 3D) then the translation in normalised units;
    ``half_extent`` is each axis's physical half-length ``(n - 1) * spacing / 2``. A rotation
    ``R`` about the centre in millimetres is ``D⁻¹ R D`` in normalised coordinates (``D`` =
    ``diag(half_extent)``), so anisotropic voxels and non-square grids stay rigid.
    """
    ndim = half_extent.numel()
    n_angles = 1 if ndim == 2 else 3
    rotation = spatial.rotation_matrix(params[:n_angles], ndim)
    linear = rotation * half_extent[None, :] / half_extent[:, None]
    return torch.cat([linear, params[n_angles:, None]], dim=1)[None]


def _affine_level(fixed, moving, ndim, level, similarity, stop, report, plateau,
                  landmarks=None, base=None, half_extent=None):
    """Optimise ``theta``; returns it (identity plus the learnt change), or None when stopped.

    A global measure needs no dense image: as ANTs and elastix do, it is computed on at most
    ``AFFINE_SAMPLES`` voxels of the level grid drawn once (seeded, so reproducible), and only
    those points are transformed and sampled in the moving image at every step.
    """
    shape = _level_shape(fixed.shape[2:], level.factor)
    f, m = resize_image(fixed, shape), resize_image(moving, shape)
    flat, points = _sample_points(shape, fixed.device)  # (N,) and (ndim, N) of the level grid
    f_points = f.flatten(2)[:, :, flat].unsqueeze(-1)  # (1, 1, N, 1)
    eye = torch.eye(ndim, ndim + 1, device=fixed.device)[None]
    if half_extent is None:  # affine: theta = eye + delta
        delta = torch.zeros_like(eye, requires_grad=True)

        def current() -> torch.Tensor:
            return eye + delta
    else:  # rigid: angles and a translation
        delta = torch.zeros((1 if ndim == 2 else 3) + ndim, device=fixed.device,
                            requires_grad=True)

        def current() -> torch.Tensor:
            return rigid_theta(delta, half_extent)
    name = AFFINE_SIMILARITY.get(similarity, similarity)
    reference = f_points.view(1, 1, f_points.shape[2], *[1] * (ndim - 1))  # as sampled below
    # the fixed samples never move: MI computes their histogram side once
    sim_at = losses.ReferenceMutualInformation(reference) if name == "mi" else \
        functools.partial(_similarity(name, AFFINE_WINDOW), reference)
    opt = _Adam(delta, AFFINE_LR, level.steps, decay=0.9)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        matrix = affine_matrix(theta, shape)[0]
        moved = matrix[:ndim, :ndim] @ points + matrix[:ndim, ndim:]
        values = spatial.sample_at(m, moved.view(1, ndim, -1, *[1] * (ndim - 1)),
                                   padding="border")
        value = sim_at(values)
        if landmarks is not None:
            full = affine_matrix(theta, fixed.shape[2:])[0]
            p = landmarks.points
            value = value + landmarks.term(p @ full[:ndim, :ndim].T + full[:ndim, ndim] - p, base)
        return value

    for k in range(level.steps):
        if stop.stopped:
            return None
        value = loss(current())
        value.backward()
        opt.step()
        yield report(k)
        if plateau.update(float(value.detach())):
            break
    with torch.no_grad():  # never hand on an affine that matches worse than none
        return current().detach() if loss(current()) < loss(eye) else eye


def _sample_points(shape: Sequence[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``AFFINE_SAMPLES`` distinct voxels of ``shape``: flat indices ``(N,)`` (long) and
    their voxel indices ``(ndim, N)`` (float), on ``device``."""
    total = math.prod(shape)
    generator = torch.Generator().manual_seed(0)
    flat = torch.randperm(total, generator=generator)[:AFFINE_SAMPLES].sort().values
    index = torch.stack(torch.unravel_index(flat, tuple(shape)))
    return flat.to(device), index.to(device=device, dtype=torch.float32)


def _deformable_level(fixed, moving, ndim, level, similarity, weight, stop, report, plateau,
                      landmarks=None, base=None):
    """Optimise a residual velocity; returns its displacement on the level grid, or None."""
    shape = _level_shape(fixed.shape[2:], level.factor)
    coarse = tuple(max(2, round(s / 2)) for s in shape)
    f, m = resize_image(fixed, shape), resize_image(moving, shape)
    velocity = torch.zeros((1, ndim) + coarse, device=fixed.device, requires_grad=True)
    # the fixed image never moves: local NCC filters its side once per level
    sim_to = losses.ReferenceLocalNCC(f, DEFORMABLE_WINDOW) if similarity == "lncc" else \
        functools.partial(_similarity(similarity, DEFORMABLE_WINDOW), f)
    reg = losses.Diffusion()
    # the penalty is on the velocity's gradient expressed in level voxels
    scale = max((s - 1) / max(c - 1, 1) for s, c in zip(shape, coarse)) ** 2
    opt = _Adam(velocity, VELOCITY_LR, level.steps)

    def residual() -> torch.Tensor:
        u = spatial.integrate_velocity(velocity, steps=INTEGRATION_STEPS)
        return spatial.resize_displacement(u, shape)

    full = tuple(fixed.shape[2:])
    to_level = torch.tensor([(s - 1) / max(n - 1, 1) for s, n in zip(shape, full)],
                            device=fixed.device)

    def objective() -> torch.Tensor:
        r = residual()
        value = sim_to(spatial.warp(m, r)) + weight * scale * reg(velocity)
        if landmarks is not None:  # the residual at the points, in full-grid voxels
            at = (landmarks.points * to_level).T.reshape(1, ndim, -1, *[1] * (ndim - 1))
            step = spatial.sample_at(r, at, padding="border").reshape(ndim, -1).T / to_level
            value = value + landmarks.term(step, base)
        return value

    start = None
    for k in range(level.steps):
        if stop.stopped:
            return None
        loss = objective()
        start = float(loss.detach()) if start is None else start
        loss.backward()
        opt.step()
        yield report(k)
        if plateau.update(float(loss.detach())):
            break
    with torch.no_grad():  # never hand on a residual that matches worse than none (Adam's
        # normalised steps drift where the similarity is flat, e.g. on an identical pair)
        if start is not None and float(objective()) >= start:
            return torch.zeros((1, ndim) + shape, device=fixed.device)
        return residual()


def refine_iter(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    initial: torch.Tensor,
    *,
    steps: int,
    similarity: str = "lncc",
    regularization: float | None = None,
    affine_only: bool = False,
    affine: bool = True,
    stop: StopToken | None = None,
    step0: int = 0,
    total: int | None = None,
    tolerance: float | None = None,
    deadline: float | None = None,
    levels: Sequence[Level] | None = None,
    landmarks: Landmarks | None = None,
    rigid_spacing: Sequence[float] | None = None,
) -> Iterator[Progress | Refined]:
    """Refine ``initial`` for the pair; yields ``Progress`` per step, then a :class:`Refined`.

    Parameters
    ----------
    fixed, moving : Tensor ``(1, 1, *spatial)``
        Normalised images on the same grid (the moving one already resampled onto the fixed).
    initial : Tensor ``(1, ndim, *spatial)``
        The starting displacement (voxels), e.g. the networks' field; zeros to start from scratch.
    steps : int
        The budget ``N`` (see :func:`schedule`).
    similarity : {"lncc", "ncc", "mse", "mi"}
        Use ``"mi"`` for pairs of different contrast.
    regularization : float, optional
        Weight of the diffusion penalty on the residual velocity (default
        ``DEFAULT_REGULARIZATION``); larger is smoother.
    affine_only : bool
        Keep the result affine on top of ``initial`` (for affine models).
    affine : bool
        Run the affine levels before the deformable ones (default); turn off for pairs known to
        be affinely aligned.
    stop : StopToken, optional
        Checked every step; when set the generator ends without yielding a field.
    step0, total : int
        Offset and total for the ``Progress`` events (the caller's numbering).
    tolerance : float, optional
        Early stopping: each level ends once its loss improves by less than this relative
        amount over a window of steps (:class:`Plateau`); ``steps`` is then a cap. None runs
        every step of the schedule.
    deadline : float, optional
        A ``time.perf_counter()`` value after which every remaining level stops at once (the
        transform found so far is kept).
    levels : sequence of Level, optional
        Run these levels instead of ``schedule(steps, ...)`` (e.g. only its affine levels).
    landmarks : Landmarks, optional
        Landmark pairs: every level adds their term (landmark-guided registration).
    rigid_spacing : sequence of float, optional
        The fixed grid's spacing: the affine levels are then rigid (rotation and translation in
        physical space, see :func:`rigid_theta`).

    Yields
    ------
    Progress, then :class:`Refined` (the last item; absent when stopped).
    """
    stop = stop or StopToken()
    weight = DEFAULT_REGULARIZATION if regularization is None else float(regularization)
    ndim = fixed.dim() - 2
    full = tuple(fixed.shape[2:])
    if levels is None:
        levels = schedule(steps, full, affine_only=affine_only, affine=affine)
    levels = list(levels)
    total = total if total is not None else step0 + sum(level.steps for level in levels)
    u = initial.detach()
    matrix = torch.eye(ndim + 1, dtype=torch.float64)
    half_extent = None
    if rigid_spacing is not None:
        half_extent = torch.tensor([(n - 1) * float(s) / 2 for n, s in zip(full, rigid_spacing)],
                                   device=fixed.device)
    done = step0
    for index, level in enumerate(levels, start=1):
        def report(k: int, level=level, index=index, base=done) -> Progress:
            return Progress(step=base + k + 1, total=total,
                            message=f"refine {level.kind} 1/{level.factor} "
                                    f"({index}/{len(levels)}) {k + 1}/{level.steps}")

        if deadline is not None and time.perf_counter() > deadline:
            break
        plateau = Plateau(tolerance, deadline=deadline)
        with torch.no_grad():
            moved = spatial.warp(moving, u, padding="border") if bool(u.any()) else moving
        if level.kind == "affine":
            theta = yield from _affine_level(fixed, moved, ndim, level, similarity, stop, report,
                                             plateau, landmarks, u, half_extent)
            if theta is None:
                return
            with torch.no_grad():
                voxel = affine_matrix(theta, full)
                step = spatial.affine_to_displacement(voxel, full)
            matrix = matrix @ voxel[0].detach().cpu().double()  # T = T_before ∘ B
        else:
            r = yield from _deformable_level(fixed, moved, ndim, level, similarity, weight, stop,
                                             report, plateau, landmarks, u)
            if r is None:
                return
            with torch.no_grad():
                step = spatial.resize_displacement(r, full)
        with torch.no_grad():
            u = spatial.compose(u, step)
        done += level.steps
    yield Refined(displacement=u, affine=matrix)
