"""Celery tasks: thin wrappers that call the core with ids, never ORM objects."""

from __future__ import annotations

import logging
import os
import socket
from functools import lru_cache

from tuner_service.config import Settings, load_settings
from tuner_service.reaper import reap
from tuner_service.search import Claim, Done, Wait, claim_trial, finish_trial
from tuner_service.store import Store
from workers.app import REAP, RUN_TRIAL, app, enqueue_trials

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def runtime() -> tuple[Settings, Store]:
    settings = load_settings()
    return settings, Store(settings.database_url)


def worker_name(settings: Settings) -> str:
    return settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"


@app.task(name=RUN_TRIAL, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_trial(self, study_id: int, ticket: str) -> str:  # noqa: ANN001 - Celery's bound task
    """Claim one trial of the study, train it, report it, and ask for the next one."""
    from tuner_service.training import train_trial  # imports Keras: only here, in the worker

    settings, store = runtime()
    claim = claim_trial(
        store,
        study_id,
        ticket=ticket,
        worker=worker_name(settings),
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
    )
    if isinstance(claim, Wait):
        self.apply_async(args=[study_id, ticket], countdown=claim.seconds)
        return f"waiting {claim.seconds}s for a round to finish"
    if isinstance(claim, Done):
        return claim.reason
    assert isinstance(claim, Claim)
    log.info("study %s: training trial %s %s", study_id, claim.trial.number, claim.values)
    outcome = train_trial(store, settings, claim)
    finished = finish_trial(store, study_id, claim.trial.id, outcome)
    if finished.more_work:
        enqueue_trials(app, study_id)
    return f"trial {finished.trial.number} {finished.trial.status} score={finished.trial.score}"


@app.task(name=REAP)
def reap_task() -> dict[str, int]:
    """Requeue trials of dead workers and wake studies that have work but no message."""
    settings, store = runtime()
    return reap(store, settings, lambda study_id, n: enqueue_trials(app, study_id, n)).to_json()
