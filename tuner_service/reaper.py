"""Crash recovery from the database, the source of truth: requeue trials whose worker went silent and
wake studies that could run more trials than they do but have no message on the broker (Redis flushed or
restarted empty, the embedded broker lost a dead worker's unacknowledged message)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tuner_service.config import Settings
from tuner_service.errors import DatabaseUnavailable
from tuner_service.queue import TeamLoad, blocked_reason
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
    waiting_messages: Callable[[str], int | None] = lambda pool: None,
) -> ReapReport:
    """One pass; ``enqueue(pool, count)`` wakes workers of a pool, ``enqueue_job(pool, job_id)`` sends a job,
    ``waiting_messages(pool)`` counts the messages ready on the pool's broker queue (None: unknown)."""
    global _last_outage
    try:
        return _reap(store, settings, enqueue, enqueue_job, waiting_messages)
    except DatabaseUnavailable:
        _last_outage = time.monotonic()
        raise


def _reap(
    store: Store,
    settings: Settings,
    enqueue: Callable[[str, int], Any],
    enqueue_job: Callable[[str, int], Any],
    waiting_messages: Callable[[str], int | None],
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
    for pool, wanted in understaffed(store, settings.wake_after_s).items():
        missing = sum(slots for _, slots in wanted) - (waiting_messages(pool) or 0)
        for study_id, slots in wanted:
            if missing <= 0:
                break
            slots = min(slots, missing)
            enqueue(pool, slots)
            store.mark_enqueued(study_id)
            woken += slots
            missing -= slots
    return ReapReport(requeued, failed, woken)


def understaffed(store: Store, idle_s: float) -> dict[str, list[tuple[int, int]]]:
    """Per pool, (study, slots) for the studies that could run more trials now than they do and have had no
    message put on the broker for ``idle_s``: a study at its parallelism, paused, or held back by its team's
    quota wants nothing; otherwise min(parallelism - running, trials owed), within the team's quota. In the
    scheduler's order, so the first studies served are the first woken."""
    from tuner_service.queue import order

    quiet = store.quiet_studies(idle_s)
    if not quiet:
        return {}
    studies, teams = store.queue_snapshot(None, window_s=0.0)
    room = {
        team_id: team.max_concurrent_trials - team.running
        for team_id, team in teams.items()
        if team.max_concurrent_trials is not None
    }
    out: dict[str, list[tuple[int, int]]] = {}
    for study in order(studies, teams):
        team = teams.get(study.team_id) or TeamLoad(study.team_id, "-")
        if study.study_id not in quiet or blocked_reason(study, team) is not None:
            continue
        slots = min(study.parallelism - study.running, study.owed, room.get(study.team_id, study.owed))
        if slots <= 0:
            continue
        if study.team_id in room:
            room[study.team_id] -= slots
        out.setdefault(study.pool, []).append((study.study_id, slots))
    return out
