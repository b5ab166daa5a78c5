"""Crash recovery from the database, the source of truth: requeue trials whose worker went silent and
wake studies that still owe trials but have no message on the broker (Redis flushed, embedded broker
lost a dead worker's unacknowledged message)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tuner_service.config import Settings
from tuner_service.errors import DatabaseUnavailable
from tuner_service.store import Store

# When this process last failed to reach the database. Heartbeats cannot be written during an outage either,
# so a trial's silence only counts once the database has been back for a whole heartbeat timeout: otherwise
# the first pass after an outage would requeue every trial that is still training.
_last_outage: float | None = None


@dataclass(frozen=True)
class ReapReport:
    """What one pass of the reaper did."""

    requeued: int = 0
    failed: int = 0
    woken: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def reap(
    store: Store,
    settings: Settings,
    enqueue: Callable[[str, int], Any],
    enqueue_job: Callable[[str, int], Any],
) -> ReapReport:
    """One pass; ``enqueue(pool, count)`` wakes workers of a pool, ``enqueue_job(pool, job_id)`` sends a job."""
    global _last_outage
    try:
        return _reap(store, settings, enqueue, enqueue_job)
    except DatabaseUnavailable:
        _last_outage = time.monotonic()
        raise


def _reap(
    store: Store,
    settings: Settings,
    enqueue: Callable[[str, int], Any],
    enqueue_job: Callable[[str, int], Any],
) -> ReapReport:
    requeued = failed = woken = 0
    timeout = settings.heartbeat_timeout_s
    recovering = _last_outage is not None and time.monotonic() - _last_outage < timeout
    for trial in [] if recovering else store.stale_trials(timeout):
        reason = f"worker {trial.worker} stopped reporting (no heartbeat for {timeout:.0f} s)"
        status = store.requeue_trial(trial.study_id, trial.id, max_retries=settings.max_trial_retries, reason=reason)
        if status == "pending":
            requeued += 1
            enqueue(trial.pool, 1)
            store.mark_enqueued(trial.study_id)
        elif status == "failed":
            failed += 1
    for job in [] if recovering else store.requeue_stale_jobs(timeout):
        enqueue_job(job.pool, job.id)
        requeued += 1
    for study_id, pool, slots in store.idle_studies(idle_s=settings.wake_after_s):
        enqueue(pool, slots)
        store.mark_enqueued(study_id)
        woken += slots
    return ReapReport(requeued, failed, woken)
