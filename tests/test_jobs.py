"""The job runner's progress throttle: fewer GUI updates, nothing else lost or reordered."""

from __future__ import annotations

import time

from deepreg_core import api
from napari_deepreg import _jobs


def _job(steps: int, pause: float = 0.0):
    def job(token):
        yield api.Started(total_steps=steps, config={})
        for k in range(1, steps):
            yield api.Progress(step=k, total=steps, message=f"step {k}")
            if pause:
                time.sleep(pause)
            if k == steps // 2:
                yield api.Metrics(step=k, values={"loss": 1.0})
        yield api.Progress(step=steps, total=steps, message="done")
    return job


def test_progress_is_throttled_but_every_other_event_and_the_last_step_arrive_in_order():
    events = list(_jobs._drive(_job(2000), None))
    progress = [e for e in events if isinstance(e, api.Progress)]
    assert isinstance(events[0], api.Started)
    assert 2 <= len(progress) < 20  # 2000 steps in far less than a second: a handful sent
    assert events[-1] == api.Progress(step=2000, total=2000, message="done")
    # the progress held back is sent before the next other event: the bar is current there
    metrics = next(i for i, e in enumerate(events) if isinstance(e, api.Metrics))
    assert events[metrics - 1] == api.Progress(step=1000, total=2000, message="step 1000")
    steps = [e.step for e in progress]
    assert steps == sorted(steps)


def test_slow_jobs_send_every_step():
    """Steps further apart than the interval are all sent (nothing a user would miss)."""
    events = list(_jobs._drive(_job(4, pause=1.2 * _jobs.PROGRESS_INTERVAL), None))
    assert [e.step for e in events if isinstance(e, api.Progress)] == [1, 2, 3, 4]
