"""One adapter between the widgets and the work they start: :class:`JobRunner`.

Every widget runs its work (a core event generator, or one function) in a napari thread worker
through a runner, which owns what each widget used to repeat:

- the worker (one at a time; ``start`` refuses a second) and its stop token, handed to the job;
- stopping the job when the widget is closed (napari quits, the dock is removed);
- errors: an exception escaping the job becomes a napari error notification (and the widget's
  ``on_error``), never a traceback dialog;
- cleanup: ``on_done`` runs on the GUI thread when the worker ends, however it ended.

Also here: the notifications every widget uses (:func:`notify_error`, :func:`notify_warning`,
:func:`notify_info`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any


def notify_error(message: str) -> None:
    """A napari error notification (what a user reads when something they asked for failed)."""
    from napari.utils import notifications

    notifications.show_error(message)


def notify_warning(message: str) -> None:
    """A napari warning notification (the job finished, but something needs attention)."""
    from napari.utils import notifications

    notifications.show_warning(message)


def notify_info(message: str) -> None:
    """A napari info notification."""
    from napari.utils import notifications

    notifications.show_info(message)


PROGRESS_INTERVAL = 0.25  # seconds between the progress updates a job sends to the GUI thread


def _drive(job: Callable[[Any], Iterator[Any]], token: Any) -> Iterator[Any]:
    """A generator function around ``job(token)`` (what a GeneratorWorker runs).

    Progress events reach the GUI thread at most every :data:`PROGRESS_INTERVAL`: a refinement
    yields one per optimiser step (tens of milliseconds apart), and repainting the progress bar
    and status for each competed with the computation for the CPU (under Xvfb a registration
    took twice as long). The last one held back is sent before any other event, and the final
    step always is, so the bar and message end where the job ended (during one long step the
    bar may show the step before it until the next event).
    """
    from deepreg_core.api import Progress

    held = None
    last = -float("inf")
    for event in job(token):
        if isinstance(event, Progress):
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL or event.step >= event.total:
                held, last = None, now
                yield event
            else:
                held = event
            continue
        if held is not None:
            yield held
            held = None
        yield event
    if held is not None:
        yield held


class JobRunner:
    """Runs a widget's jobs in a thread worker, one at a time.

    Parameters
    ----------
    owner : QWidget
        The widget; when it is destroyed, the running job is asked to stop.
    on_event : callable
        Called on the GUI thread with every value a generator job yields.
    on_done : callable
        Called on the GUI thread when the worker has ended (finished, stopped or failed).
    on_error : callable, optional
        Called with the exception that escaped a job, after the error notification.
    """

    def __init__(self, owner: Any, on_event: Callable[[Any], None],
                 on_done: Callable[[], None], on_error: Callable[[Exception], None] | None = None,
                 ) -> None:
        self.worker: Any = None
        self.stop_token: Any = None
        self._on_event = on_event
        self._on_done = on_done
        self._on_error = on_error
        owner.destroyed.connect(lambda *_: self.stop())  # closing napari stops the job

    @property
    def running(self) -> bool:
        """True while a worker runs."""
        return self.worker is not None

    def start(self, job: Callable[[Any], Iterator[Any]] | Callable[[], Any], *,
              returns: Callable[[Any], None] | None = None, error_prefix: str = "") -> bool:
        """Start ``job`` in a worker; False (nothing started) when one is already running.

        ``job`` takes the stop token and returns an event generator; with ``returns`` it is a
        plain function of no argument whose return value goes to ``returns`` (GUI thread).
        Errors are reported as ``error_prefix + message``.
        """
        if self.running:
            return False
        from napari.qt.threading import create_worker
        from superqt.utils import FunctionWorker, GeneratorWorker

        from deepreg_core.api import StopToken

        token = StopToken()
        if returns is None:
            worker = create_worker(_drive, job, token, _worker_class=GeneratorWorker,
                                   _ignore_errors=True)
            worker.yielded.connect(self._on_event)
        else:
            worker = create_worker(job, _worker_class=FunctionWorker, _ignore_errors=True)
            worker.returned.connect(returns)
        worker.errored.connect(lambda error: self._failed(error, error_prefix))
        worker.finished.connect(self._finished)
        self.worker, self.stop_token = worker, token
        worker.start()
        return True

    def stop(self) -> bool:
        """Ask the running job to stop at its next step (it saves what it promises to).

        Returns True when a job was running (the caller says "stopping…"), False otherwise.
        """
        if self.stop_token is None:
            return False
        self.stop_token.stop()
        return True

    def _failed(self, error: Exception, prefix: str) -> None:
        notify_error(f"{prefix}{error}")
        if self._on_error is not None:
            self._on_error(error)

    def _finished(self) -> None:
        self.worker = self.stop_token = None
        self._on_done()
