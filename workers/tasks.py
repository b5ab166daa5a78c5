"""Celery tasks: thin wrappers that call the core with ids, never ORM objects."""

from __future__ import annotations

import logging
import os
import socket
import threading
from functools import lru_cache

from celery.worker import state as worker_state

from tuner_service import shutdown
from tuner_service.config import Settings, load_settings
from tuner_service.gpu_slots import GpuPlace
from tuner_service.outage import wait_out
from tuner_service.proposals import refill
from tuner_service.search import Claim, Done, Wait, claim_next, finish_trial
from tuner_service.store import Store
from workers import announce, lifecycle
from workers.app import REAP, RUN_JOB, RUN_TRIAL, app, enqueue_trials, reap_through

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def runtime() -> tuple[Settings, Store]:
    settings = load_settings()
    return settings, Store(settings.database_url)


def worker_name(settings: Settings) -> str:
    """Unique across hosts and restarts: host, process id and the launcher's slot (``cpu0``, ``gpu1.0``)."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}:{settings.worker_id}" if settings.worker_id else base


def gpu_place(settings: Settings, pool: str) -> GpuPlace | None:
    """This process's GPU and its share of it (``--per-gpu K``) when it serves the GPU pool; None otherwise."""
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or None
    if pool != "gpu" or gpu is None:
        return None
    return GpuPlace(socket.gethostname(), gpu, max(1, settings.per_gpu), settings.gpu_process)


def _wake(pool: str, study_id: int) -> None:
    """Enqueue the pool's next trial; with the broker away, the reaper wakes the study once it is back."""
    try:
        enqueue_trials(app, pool)
    except Exception as exc:  # noqa: BLE001 - any broker failure: the database still says what is owed
        log.warning("could not enqueue the next trial of pool %s (%s); the reaper will", pool, exc)
        return
    wait_out(lambda: store_of().mark_enqueued(study_id), what="marking a study enqueued")


def store_of() -> Store:
    return runtime()[1]


@app.task(name=RUN_TRIAL, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_trial(self, pool: str, ticket: str) -> str:  # noqa: ANN001 - Celery's bound task
    """Claim the next trial of the pool (fairly chosen), train it, report it, and wake the next worker."""
    from tuner_service.training import train_trial  # imports Keras: only here, in the worker

    if threading.current_thread() is not threading.main_thread():
        # On a broker without an event loop (the embedded one) Celery runs a delayed message (a claim told to
        # wait) from its timer thread, beside the trial the main thread may be training: one process would
        # train two at once, beyond its memory share and its GPU slot. Queue it again, now due, for a worker's
        # main thread to take when free.
        self.apply_async(args=[pool, ticket], queue=self.request.delivery_info.get("routing_key"))
        return "delayed message queued again for a main thread"
    settings, store = runtime()
    if worker_state.should_stop is not None or worker_state.should_terminate is not None:
        # On the embedded broker a worker told to stop still takes one more message; starting a trial now
        # would strand it when the worker is killed. Hand the message back for another worker instead.
        self.apply_async(args=[pool, ticket], queue=self.request.delivery_info.get("routing_key"))
        return "worker stopping: message handed back"
    place = gpu_place(settings, pool)
    claim = wait_out(
        lambda: claim_next(
            store,
            pool,
            ticket=ticket,
            worker=worker_name(settings),
            gpu=os.environ.get("CUDA_VISIBLE_DEVICES") or None,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            window_s=settings.fair_share_window_s,
            hypermodels=announce.offered_names(),
            proposal_delay_s=settings.proposal_delay_s,
            place=place,
        ),
        what="claiming a trial",
    )
    if isinstance(claim, Wait):
        self.apply_async(
            args=[pool, ticket], countdown=claim.seconds, queue=self.request.delivery_info.get("routing_key")
        )
        for study_id in claim.study_ids:  # the message is on its way back: the reaper need not wake them
            wait_out(lambda study_id=study_id: store.mark_enqueued(study_id), what="marking a study enqueued")
        return f"waiting {claim.seconds}s for a round to finish"
    if isinstance(claim, Done):
        return claim.reason
    assert isinstance(claim, Claim)
    study_id = claim.study.id
    if shutdown.requested():  # told to stop while claiming: give the trial back before training any of it
        return _hand_back(store, settings, claim, pool, shutdown.Handback("worker stopping before the trial started"))
    log.info("study %s: training trial %s %s", study_id, claim.trial.number, claim.values)
    outcome = train_trial(store, settings, claim)
    lifecycle.trial_done(settings, gpu_slots=claim.trial.gpu_slots or 1)
    if isinstance(outcome, shutdown.Handback):
        return _hand_back(store, settings, claim, pool, outcome)
    finished = wait_out(lambda: finish_trial(store, study_id, claim.trial.id, outcome), what="storing a result")
    if finished.more_work:
        # Every lock is released: fit the study's model now, so the next claim only takes the result.
        _refill(store, study_id, settings)
    if wait_out(lambda: store.pool_has_work(pool), what="looking for more work"):
        _wake(pool, study_id)
    return f"study {study_id} trial {finished.trial.number} {finished.trial.status} score={finished.trial.score}"


def _refill(store: Store, study_id: int, settings: Settings) -> None:
    """Compute the study's next proposals; a failure costs only speed (a claim that finds none computes
    one itself, outside the locks), never the result already stored."""
    try:
        refill(store, study_id, delay_s=settings.proposal_delay_s)
    except Exception:  # noqa: BLE001 - logged; the claim path has its own way to a proposal
        log.exception("study %s: computing the next proposals failed", study_id)


def _hand_back(store: Store, settings: Settings, claim: Claim, pool: str, handback: shutdown.Handback) -> str:
    """Requeue a trial this worker did not finish (it is stopping), at once and without spending a retry."""
    trial = claim.trial
    if handback.taken_over:
        return f"trial {trial.id}: {handback.reason}"
    status = wait_out(
        lambda: store.preempt_trial(
            claim.study.id, trial.id, ticket=trial.ticket or "", resume=handback.resume, reason=handback.reason
        ),
        what="handing back a trial",
        max_wait_s=max(5.0, settings.shutdown_grace_s),
    )
    log.warning("study %s: trial %s handed back (%s): now %s", claim.study.id, trial.number, handback.reason, status)
    if status == "pending":
        _wake(pool, claim.study.id)
    return f"trial {trial.id} {status}: {handback.reason}"


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
    report = reap_through(app, store, settings)
    return report.to_json()
