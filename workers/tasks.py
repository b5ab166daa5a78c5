"""Celery tasks: thin wrappers that call the core with ids, never ORM objects."""

from __future__ import annotations

import logging
import os
import socket
from functools import lru_cache

from celery.worker import state as worker_state

from tuner_service.config import Settings, load_settings
from tuner_service.proposals import refill
from tuner_service.reaper import reap
from tuner_service.search import Claim, Done, Wait, claim_next, finish_trial
from tuner_service.store import Store
from workers.app import REAP, RUN_JOB, RUN_TRIAL, app, enqueue_job, enqueue_trials

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def runtime() -> tuple[Settings, Store]:
    settings = load_settings()
    return settings, Store(settings.database_url)


def worker_name(settings: Settings) -> str:
    return settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"


@app.task(name=RUN_TRIAL, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_trial(self, pool: str, ticket: str) -> str:  # noqa: ANN001 - Celery's bound task
    """Claim the next trial of the pool (fairly chosen), train it, report it, and wake the next worker."""
    from tuner_service.training import train_trial  # imports Keras: only here, in the worker

    settings, store = runtime()
    if worker_state.should_stop is not None or worker_state.should_terminate is not None:
        # On the embedded broker a worker told to stop still takes one more message; starting a trial now
        # would strand it when the worker is killed. Hand the message back for another worker instead.
        self.apply_async(args=[pool, ticket], queue=self.request.delivery_info.get("routing_key"))
        return "worker stopping: message handed back"
    claim = claim_next(
        store,
        pool,
        ticket=ticket,
        worker=worker_name(settings),
        gpu=os.environ.get("CUDA_VISIBLE_DEVICES") or None,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        window_s=settings.fair_share_window_s,
        proposal_delay_s=settings.proposal_delay_s,
    )
    if isinstance(claim, Wait):
        self.apply_async(
            args=[pool, ticket], countdown=claim.seconds, queue=self.request.delivery_info.get("routing_key")
        )
        return f"waiting {claim.seconds}s for a round to finish"
    if isinstance(claim, Done):
        return claim.reason
    assert isinstance(claim, Claim)
    study_id = claim.study.id
    log.info("study %s: training trial %s %s", study_id, claim.trial.number, claim.values)
    outcome = train_trial(store, settings, claim)
    finished = finish_trial(store, study_id, claim.trial.id, outcome)
    if finished.more_work:
        # Every lock is released: fit the study's model now, so the next claim only takes the result.
        refill(store, study_id, delay_s=settings.proposal_delay_s)
    if store.pool_has_work(pool):
        enqueue_trials(app, pool)
        store.mark_enqueued(study_id)
    return f"study {study_id} trial {finished.trial.number} {finished.trial.status} score={finished.trial.score}"


@app.task(name=RUN_JOB, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: int) -> str:
    """Run a learning-rate range test or a rerun; a second delivery of the message finds it taken."""
    from tuner_service.jobs import run_job as run  # imports Keras: only here, in the worker

    settings, store = runtime()
    job = store.start_job(job_id, worker_name(settings))
    if job is None:
        return f"job {job_id} already taken or gone"
    run(store, settings, job)
    return f"job {job_id} done"


@app.task(name=REAP)
def reap_task() -> dict[str, int]:
    """Requeue trials and jobs of dead workers and wake studies that have work but no message."""
    settings, store = runtime()
    report = reap(
        store,
        settings,
        lambda pool, n: enqueue_trials(app, pool, n),
        lambda pool, job_id: enqueue_job(app, pool, job_id),
    )
    return report.to_json()
