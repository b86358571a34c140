"""Register every frame of a time series (2D+t, 3D+t) to a reference: motion and drift correction.

:func:`register_series_iter` is the job as a generator of :mod:`~deepreg_core.events` (one
:class:`~deepreg_core.events.Progress` and one :class:`~deepreg_core.events.Metrics` per frame,
then ``Finished(SeriesResult)``, or ``Stopped(result=SeriesResult)`` holding the frames done
before a stop); :func:`register_series` runs it and returns the :class:`SeriesResult`. Each frame
is registered with :func:`deepreg_core.inference.register_iter` (any model, preset or option it
takes: ``model="affine"`` for affine-only correction, the default ``"deformable"`` for
non-rigid motion).

The reference
-------------
``"first"`` or a frame index ``k``
    Every frame is registered directly to frame 0 (or ``k``); that frame is the identity.
``"previous"``
    Frame ``t`` is registered to frame ``t - 1`` and the transforms are chained onto frame 0's
    grid: ``U_t = compose(u_t, U_{t-1})`` (:func:`deepreg_core.spatial.compose`): warping frame
    ``t`` by ``u_t`` brings it onto frame ``t - 1``, warping that by ``U_{t-1}`` onto frame 0.
    Suits slow changes of appearance (bleaching); small errors add up along the chain.
``"mean"``
    Every frame is registered to the voxel-wise mean of the series. A drifting series' mean is
    blurred and sits at the average position, so the frames are aligned to that position.

Displacements and drift
-----------------------
``U_t`` ``(ndim, *frame.shape)`` maps a voxel ``x`` of the reference grid to ``x + U_t(x)`` in
frame ``t`` (voxels, array order; ``docs/conventions.md``): a frame whose content moved by
``+s`` voxels has ``U_t = s``. The drift of frame ``t`` is ``U_t`` in mm (times the frame
spacing per axis) averaged over the grid: its mean vector ``drift_vector_mm[t]`` ``(ndim,)``
and the mean length ``drift_mm[t]``.

Example
-------
>>> from deepreg_core.series import register_series
>>> result = register_series(stack, time_axis=0, reference="first",
...                          model="affine")  # doctest: +SKIP
>>> result.corrected.shape, result.drift_vector_mm[-1]  # doctest: +SKIP
((20, 256, 256), array([ 1.3, -0.7]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepreg_core.events import Event, Finished, Metrics, Progress, Started, Stopped, StopToken
from deepreg_core.image import Image
from deepreg_core.stacks import as_frames

__all__ = ["REFERENCES", "SeriesResult", "register_series", "register_series_iter"]

REFERENCES = ("first", "previous", "mean")
"""The named references; an int picks a frame."""

_PAIR_METRICS = ("ncc_before", "ncc_after", "mi_before", "mi_after", "folding_percent",
                 "worse_than_input", "seconds")


@dataclass(frozen=True, repr=False)
class SeriesResult:
    """A registered time series: the corrected frames, their transforms, metrics and drift.

    Attributes
    ----------
    corrected : ndarray, shape (frames_done, *grid.shape), float32
        The frames warped onto the reference grid, time first (original intensities).
    grid : Image
        The frames' grid (frame 0 as given); ``frame(t)`` is ``grid.with_data(corrected[t])``.
    displacements : ndarray, shape (frames_done, ndim, *grid.shape), or None
        ``U_t`` per frame in voxels (see the module docstring); None with
        ``keep_displacements=False``.
    drift_mm : ndarray, shape (frames_done,)
        Mean length of ``U_t`` over the grid, in mm (the frames' world unit).
    drift_vector_mm : ndarray, shape (frames_done, ndim)
        Mean of ``U_t`` over the grid in mm, per array axis.
    metrics : tuple of dict
        Per frame: the registered pair's ``ncc_before/after``, ``mi_before/after``,
        ``worse_than_input``, ``seconds`` (and ``folding_percent`` with ``qa=True``), plus
        ``drift_mm`` and ``drift_axis{i}_mm``. For ``"previous"`` the pair is (frame ``t - 1``,
        frame ``t``). The reference frame itself has NCC 1 and zero drift.
    frames_done : int
        Frames registered (all of them unless the job was stopped: frames ``0..frames_done-1``).
    total_frames : int
    reference : str or int
        ``"first"``, ``"previous"``, ``"mean"`` or the reference frame's index.
    warnings : tuple of str
        The guard's findings, prefixed with the frame (``"frame 3: ..."``).
    notes : tuple of str
        Fallbacks and affine starts the preset took (``RegistrationResult.notes``), prefixed
        with the frame.
    """

    corrected: np.ndarray
    grid: Image
    displacements: np.ndarray | None
    drift_mm: np.ndarray
    drift_vector_mm: np.ndarray
    metrics: tuple[dict[str, float], ...]
    frames_done: int
    total_frames: int
    reference: str | int
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether every frame was registered (False after a stop)."""
        return self.frames_done == self.total_frames

    def frame(self, t: int) -> Image:
        """Corrected frame ``t`` as an :class:`Image` on the reference grid."""
        return self.grid.with_data(self.corrected[t])

    def __repr__(self) -> str:
        return (f"SeriesResult({self.frames_done}/{self.total_frames} frames of "
                f"{self.grid.shape}, reference={self.reference!r}, mean drift "
                f"{float(self.drift_mm.mean()) if self.frames_done else 0.0:.3g} mm)")


def _check_reference(reference: object, count: int) -> str | int:
    if isinstance(reference, str) and reference in REFERENCES:
        return reference
    if isinstance(reference, (int, np.integer)) and not isinstance(reference, bool):
        if -count <= int(reference) < count:
            return int(reference) % count
        raise ValueError(
            f"reference: expected a frame index in [0, {count - 1}] (the series has {count} "
            f"frames), got {reference}."
        )
    raise ValueError(
        f"reference: expected one of {', '.join(map(repr, REFERENCES))} or a frame index, got "
        f"{reference!r}."
    )


def _self_metrics(frame: Image) -> dict[str, float]:
    """The pair metrics of a frame with itself (the reference frame: nothing to register)."""
    from deepreg_core import losses
    from deepreg_core.preprocess import normalize_intensity

    f = torch.from_numpy(normalize_intensity(frame.data))[None, None]
    mi = float(losses.mutual_information(f, f))
    return {"ncc_before": 1.0, "ncc_after": 1.0, "mi_before": mi, "mi_after": mi,
            "worse_than_input": 0.0, "seconds": 0.0}


def _drift(u: np.ndarray, spacing: Sequence[float]) -> tuple[float, np.ndarray]:
    """Mean length (mm) and mean vector (mm, per axis) of a displacement ``(ndim, *shape)``."""
    mm = u * np.asarray(spacing, dtype=np.float32).reshape((-1,) + (1,) * (u.ndim - 1))
    return float(np.linalg.norm(mm, axis=0).mean()), mm.reshape(len(spacing), -1).mean(axis=1)


def register_series_iter(
    frames: Sequence[Image] | Image | np.ndarray,
    *,
    time_axis: int | None = None,
    spacing: Sequence[float] | None = None,
    reference: str | int = "first",
    model="deformable",
    preset: str = "auto",
    device: str = "auto",
    qa: bool = False,
    keep_displacements: bool = True,
    stop: StopToken | None = None,
    **options,
) -> Iterator[Event]:
    """Register every frame of a series to a reference, yielding events (see the module doc).

    Parameters
    ----------
    frames : list of Image, Image or ndarray
        The series: frames on one grid, a 3D :class:`Image` holding a 2D+t series, or a 3D/4D
        array ``(.., T, ..)``.
    time_axis : int
        Where the time axis lies in an Image or array input (ignored for a list of frames).
    spacing : sequence of float, optional
        A frame's voxel size for an array input (default 1 per voxel).
    reference : {"first", "previous", "mean"} or int
        What every frame is registered to (module docstring).
    model, preset, device, **options
        Passed to :func:`deepreg_core.inference.register_iter` for each frame
        (``model="affine"`` for affine-only correction; ``refine_steps``, ``regularization``,
        ``similarity``, ``time_budget``, ``seed``, ...).
    qa : bool
        Compute the per-frame quality maps (adds ``folding_percent``); off by default.
    keep_displacements : bool
        Keep ``U_t`` for every frame in the result (``T * ndim`` float32 fields).
    stop : StopToken, optional
        Checked within each frame; the job then yields ``Stopped(step, result=SeriesResult)``
        holding the frames done.

    Yields
    ------
    Started(total_steps=T), Progress per frame (and within it), Metrics(step=t + 1) per frame,
    then Finished(SeriesResult) or Stopped(result=SeriesResult).

    Raises
    ------
    ValueError, TypeError
        Before any work: a time axis of length 1, frames of different shapes or grids, a bad
        reference, or options :func:`~deepreg_core.inference.register_iter` refuses.
    """
    from deepreg_core import spatial
    from deepreg_core.inference import (
        apply_transform,
        register_iter,
        resolve_models,
        uses_networks,
    )

    stop = stop or StopToken()
    frames = as_frames(frames, time_axis, spacing=spacing, name="time_axis")
    count = len(frames)
    if count < 2:
        raise ValueError(
            f"time_axis: expected a series of at least 2 frames, got 1 (time axis {time_axis} of "
            "length 1). A single image has nothing to correct; to register two images use "
            "register(fixed, moving)."
        )
    reference = _check_reference(reference, count)
    grid = frames[0]
    anchor = 0 if reference == "first" else reference  # the reference frame's index
    mean = None
    if reference == "mean":
        mean = grid.with_data(np.mean([f.data for f in frames], axis=0, dtype=np.float64)
                              .astype(np.float32))

    def fixed_for(t: int) -> Image | None:
        """The image frame ``t`` is registered to, or None when ``t`` is the reference."""
        if reference == "previous":
            return frames[t - 1] if t else None
        if reference == "mean":
            return mean
        return None if t == anchor else frames[int(anchor)]

    if uses_networks(model):
        model = resolve_models(model, grid.ndim, preset)  # loaded once, not once per frame

    def job(t: int) -> Iterator[Event]:
        return register_iter(fixed_for(t), frames[t], model=model, preset=preset, device=device,
                             qa=qa, stop=stop, **options)

    # the first pair's generator runs its checks (model, preset, options) before any work
    first = next(t for t in range(count) if fixed_for(t) is not None)
    primed = job(first)
    inner = next(primed)
    yield Started(total_steps=count, config={
        "frames": count, "shape": list(grid.shape), "reference": reference,
        "model": getattr(inner, "config", {}).get("model", str(model)), "preset": preset,
        "device": getattr(inner, "config", {}).get("device", device)})

    corrected: list[np.ndarray] = []
    fields: list[np.ndarray] = []
    rows: list[dict[str, float]] = []
    drift: list[tuple[float, np.ndarray]] = []
    warnings: list[str] = []
    notes: list[str] = []
    chain: torch.Tensor | None = None  # U_{t-1} for "previous"
    stopped = False
    for t in range(count):
        if stop.stopped:
            stopped = True
            break
        fixed = fixed_for(t)
        if fixed is None:
            u = np.zeros((grid.ndim, *grid.shape), np.float32)
            warped, row = frames[t].data.astype(np.float32), _self_metrics(frames[t])
        else:
            result = None
            for event in (primed if t == first else job(t)):
                if isinstance(event, Progress):
                    yield Progress(step=t, total=count,
                                   message=f"frame {t + 1}/{count}: {event.message}")
                elif isinstance(event, Finished):
                    result = event.result
            if result is None:  # the token stopped this frame: it is not kept
                stopped = True
                break
            u, warped = result.displacement, result.warped.data
            if reference == "previous" and chain is not None:
                total = spatial.compose(torch.from_numpy(u)[None], chain)
                u = total[0].numpy()
                warped = apply_transform(dataclasses.replace(result, displacement=u),
                                         frames[t]).data
            row = {k: float(result.metrics[k]) for k in _PAIR_METRICS if k in result.metrics}
            warnings += [f"frame {t}: {w}" for w in result.warnings]
            notes += [f"frame {t}: {n}" for n in result.notes]
        if reference == "previous":
            chain = torch.from_numpy(np.ascontiguousarray(u, dtype=np.float32))[None]
        length, vector = _drift(u, grid.spacing)
        row = {**row, "drift_mm": length,
               **{f"drift_axis{i}_mm": float(v) for i, v in enumerate(vector)}}
        corrected.append(np.asarray(warped, dtype=np.float32))
        if keep_displacements:
            fields.append(np.asarray(u, dtype=np.float32))
        rows.append(row)
        drift.append((length, vector))
        yield Progress(step=t + 1, total=count, message=f"frame {t + 1}/{count}")
        yield Metrics(step=t + 1, values=row)

    done = len(corrected)
    result = SeriesResult(
        corrected=np.stack(corrected) if done else np.zeros((0, *grid.shape), np.float32),
        grid=grid,
        displacements=(np.stack(fields) if fields else
                       np.zeros((0, grid.ndim, *grid.shape), np.float32))
        if keep_displacements else None,
        drift_mm=np.array([d[0] for d in drift], dtype=np.float64),
        drift_vector_mm=np.array([d[1] for d in drift], dtype=np.float64).reshape(done, grid.ndim),
        metrics=tuple(rows), frames_done=done, total_frames=count, reference=reference,
        warnings=tuple(warnings), notes=tuple(notes))
    if stopped:
        yield Stopped(step=done, result=result)
    else:
        yield Finished(result=result)


def register_series(frames: Sequence[Image] | Image | np.ndarray, **kwargs) -> SeriesResult:
    """Run :func:`register_series_iter` and return its :class:`SeriesResult`.

    Takes the same arguments. After a stop (``stop=token``) the result holds the frames done
    before it (``result.complete`` is False).

    Examples
    --------
    >>> import numpy as np
    >>> stack = np.random.default_rng(0).random((3, 48, 48)).astype(np.float32)
    >>> result = register_series(stack, time_axis=0, model="affine",
    ...                          preset="fast")  # doctest: +SKIP
    >>> result.frames_done  # doctest: +SKIP
    3
    """
    from deepreg_core.events import drain

    last = drain(register_series_iter(frames, **kwargs))
    if isinstance(last, (Finished, Stopped)) and isinstance(last.result, SeriesResult):
        return last.result
    raise RuntimeError("the series registration ended without a result")  # pragma: no cover
