"""The registration job as the Register widget runs it in a worker thread.

The job is the core's ``register_iter`` generator (``docs/architecture.md``) with two additions
that keep the GUI thread free and error dialogs out of sight:

- after ``Finished(result)`` the pictures of the result (Jacobian, grid, checkerboard...) are
  computed in the worker too and yielded as :class:`Rendered`;
- any exception becomes a :class:`JobFailed` event carrying a message for
  ``napari.utils.notifications.show_error`` (the worker itself never errors on bad input).

The job receives copies of the layer data (made on the GUI thread) and never touches layers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobFailed:
    """The job stopped on an error; ``message`` says what went wrong and how to fix it."""

    message: str


@dataclass(frozen=True)
class Rendered:
    """The registration finished: its ``result`` and the arrays of its output layers.

    ``channels``: every moving channel warped, ``(C, *fixed.shape)``, for a multi-channel job.
    """

    result: Any
    outputs: dict[str, Any] = field(default_factory=dict)
    channels: Any = None


def registration_job(
    fixed: Any,
    moving: Any,
    options: dict[str, Any],
    stop: Any,
    displayed: tuple[int, ...] | None = None,
    channels: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Yield the core's events, then :class:`Rendered`; :class:`JobFailed` instead of raising.

    Parameters
    ----------
    fixed, moving : deepreg_core.image.Image
        Copies of the layers' data in their physical space.
    options : dict
        Keyword arguments of ``deepreg_core.api.register_iter`` (model, refine_steps,
        regularization, device, labels and points).
    stop : deepreg_core.api.StopToken
        Set by the Cancel button; the core checks it at every step and yields ``Stopped``.
    displayed : tuple of int, optional
        Array axes on screen, for the deformation grid.
    channels : dict, optional
        ``{"channel": int or "mean", ...}``: ``fixed`` and ``moving`` are lists of channel
        Images (a fixed Image without channels is allowed) and the job runs
        ``register_channels_iter``; :class:`Rendered` then carries every warped channel.
    """
    try:
        from deepreg_core import api
        from napari_deepreg._results import render_outputs

        if channels is None:
            events = api.register_iter(fixed, moving, stop=stop, **options)
        else:
            events = api.register_channels_iter(fixed, moving, channel=channels["channel"],
                                                stop=stop, **options)
        for event in events:
            if isinstance(event, api.Finished) and channels is not None:
                result = event.result.registration
                yield Rendered(result, render_outputs(result, displayed),
                               event.result.warped_channels)
            elif isinstance(event, api.Finished):
                yield Rendered(event.result, render_outputs(event.result, displayed))
            else:
                yield event
    except (ValueError, TypeError) as error:
        yield JobFailed(str(error))
    except Exception as error:  # noqa: BLE001 - shown to the user, logged with its traceback
        logger.exception("registration failed")
        yield JobFailed(f"Registration failed ({type(error).__name__}): {error}")


def format_metrics(metrics: dict[str, float], model: str = "", device: str = "") -> str:
    """A short multi-line read-out of a result's metrics (before → after).

    Examples
    --------
    >>> print(format_metrics({"ncc_before": 0.5, "ncc_after": 0.9, "folding_percent": 0.0}))
    NCC 0.500 → 0.900
    folding 0.000 %
    """
    lines = []
    pairs = [("NCC", "ncc", "{:.3f}"), ("MI", "mi", "{:.3f}"), ("Dice", "dice", "{:.3f}"),
             ("TRE", "tre", "{:.2f}")]
    for label, key, fmt in pairs:
        before_key = f"{key}_before_mm" if key == "tre" else f"{key}_before"
        after_key = f"{key}_after_mm" if key == "tre" else f"{key}_after"
        if before_key in metrics and after_key in metrics:
            unit = " mm" if key == "tre" else ""
            lines.append(f"{label} {fmt.format(metrics[before_key])} → "
                         f"{fmt.format(metrics[after_key])}{unit}")
    if "tre_holdout_before_mm" in metrics and "tre_holdout_after_mm" in metrics:
        lines.append(f"held-out TRE {metrics['tre_holdout_before_mm']:.2f} → "
                     f"{metrics['tre_holdout_after_mm']:.2f} mm")
    if "folding_percent" in metrics:
        lines.append(f"folding {metrics['folding_percent']:.3f} %")
    if metrics.get("worse_than_input"):
        lines.append("worse than the unregistered pair (see the warning)")
    tail = []
    if "seconds" in metrics:
        tail.append(f"{metrics['seconds']:.1f} s")
    if device:
        tail.append(f"on {device}")
    if model:
        tail.append(f"({model})")
    if tail:
        lines.append(" ".join(tail))
    return "\n".join(lines)
