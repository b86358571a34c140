"""Typed events for long jobs, and a cooperative stop token.

Long jobs in the core (training, instance optimisation, batch registration) are generators that
yield these small frozen events and check a :class:`StopToken` once per step. The CLI and the
tests consume them synchronously with :func:`drain`; the napari plugin runs the same generator in a
``thread_worker`` and turns events into progress bars, plots and layers.

A job yields :class:`Started` first and ends with either :class:`Finished` (it ran to the end) or
:class:`Stopped` (the token was set; whatever could be saved was saved).

Example
-------
>>> from deepreg_core.events import Finished, Progress, Started, drain
>>> def job(n):
...     yield Started(total_steps=n, config={})
...     for k in range(1, n + 1):
...         yield Progress(step=k, total=n)
...     yield Finished(result={"answer": 42})
>>> drain(job(3)).result
{'answer': 42}
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class StopRequested(Exception):
    """Raised by :meth:`StopToken.raise_if_stopped` once a stop was requested."""


@dataclass(frozen=True)
class Started:
    """A job started: it will run ``total_steps`` steps with this (JSON-ready) ``config``."""

    total_steps: int
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """Step ``step`` of ``total`` is done (1-based: the last step is ``step == total``)."""

    step: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class Metrics:
    """Scalar metrics measured after step ``step`` on the training or validation data."""

    step: int
    values: dict[str, float]
    phase: Literal["train", "val"] = "train"


@dataclass(frozen=True)
class CheckpointSaved:
    """A complete checkpoint for step ``step`` now lies in the folder ``path``."""

    step: int
    path: Path


@dataclass(frozen=True)
class Stopped:
    """The job stopped at ``step`` on request; ``checkpoint`` is where its state was saved.

    ``result`` is what a job keeps of the work done before the stop (e.g. the frames of a time
    series already registered), or None.
    """

    step: int
    checkpoint: Path | None = None
    result: Any = None


@dataclass(frozen=True)
class Finished:
    """The job ran to its end; ``result`` is what it produced."""

    result: Any


Event = Started | Progress | Metrics | CheckpointSaved | Stopped | Finished


class StopToken:
    """A thread-safe flag that asks a running job to stop at its next step.

    The GUI thread calls :meth:`stop`; the worker checks :attr:`stopped` once per step.

    Example
    -------
    >>> token = StopToken()
    >>> token.stopped
    False
    >>> token.stop()
    >>> token.stopped
    True
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def stop(self) -> None:
        """Request the job to stop (idempotent; safe from any thread)."""
        self._event.set()

    @property
    def stopped(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()

    def raise_if_stopped(self) -> None:
        """Raise :class:`StopRequested` if a stop was requested."""
        if self._event.is_set():
            raise StopRequested("a stop was requested through the StopToken")

    def __repr__(self) -> str:
        return f"StopToken(stopped={self.stopped})"


def drain(events: Iterable[Event], on_event: Callable[[Event], None] | None = None) -> Event:
    """Run an event generator to its end and return its last event.

    Parameters
    ----------
    events : iterable of Event
        The job, e.g. ``train(config)``.
    on_event : callable, optional
        Called with every event as it arrives (for printing or logging).

    Returns
    -------
    Event
        The last event: :class:`Finished` (read ``.result``) or :class:`Stopped`.

    Raises
    ------
    ValueError
        If the job yielded nothing.

    Example
    -------
    >>> drain(iter([Started(1), Progress(1, 1), Stopped(1)]))
    Stopped(step=1, checkpoint=None, result=None)
    """
    last: Event | None = None
    for event in events:
        if on_event is not None:
            on_event(event)
        last = event
    if last is None:
        raise ValueError(
            "drain: expected a job that yields at least one event, got an empty iterable."
        )
    return last
