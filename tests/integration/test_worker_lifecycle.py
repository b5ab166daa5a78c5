"""Worker processes that stop and die during a study: a SIGTERM hands the running trial back at an epoch end
(requeued at once, retries unchanged, resumed from its checkpoint), and a study whose workers are SIGKILLed
again and again still runs each trial of its budget exactly once to completion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

from tests.integration.test_team_queue import Team, completed, quick_study, trials_of, wait_until
from tuner_service.store import Store
from tuner_service.training import preempt_checkpoint_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def reap_now(store: Store, settings) -> None:
    from workers.app import celery_for, reap_through

    reap_through(celery_for(settings), store, settings)


def epochs_are_contiguous(store: Store, trial_id: int) -> bool:
    epochs = sorted((e.execution, e.epoch) for e in store.epochs(trial_id))
    return [e for _, e in epochs] == list(range(len(epochs)))


def start_worker_command(settings, log_path: Path) -> subprocess.Popen:
    """`tuner-service worker` itself (the launcher that forwards SIGTERM to its Celery process)."""
    from tuner_service.launcher import settings_env

    env = {**os.environ, **settings_env(settings)}
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    command = [sys.executable, "-m", "tuner_service.cli", "worker", "--concurrency", "1"]
    return subprocess.Popen(command, env=env, stdout=log, stderr=log)


def unacked_messages(prefix: str) -> int:
    import redis

    from tests.conftest import REDIS_TEST_URL

    with redis.Redis.from_url(REDIS_TEST_URL) as client:
        return client.hlen(prefix + "unacked")


def test_sigterm_hands_the_trial_back_at_an_epoch_end_and_another_worker_resumes_it(
    deployment, workers, redis_prefix, tmp_path
) -> None:
    settings, store, app = deployment(TUNER_SHUTDOWN_GRACE="60")
    pool = workers(settings)
    victim = start_worker_command(settings, pool.log_dir / "victim.log")
    team = Team(app, store, "deploy")
    budget = 2
    study = team.submit(
        quick_study("deploy", budget, early_stopping={"patience": 100, "max_epochs": 8}, search_space={
            **quick_study("x", 1)["search_space"], "batch_size": {"type": "fixed", "value": 16},
        })
    )  # fmt: skip
    wait_until(
        lambda: any(t.status == "running" and t.epochs_run >= 2 for t in trials_of(store, study)),
        what="a trial in the middle of training",
        logs=pool.logs,
    )
    trial = next(t for t in trials_of(store, study) if t.status == "running")
    sent = time.monotonic()
    victim.send_signal(signal.SIGTERM)
    wait_until(lambda: store.get_trial(study, trial.id).status == "pending", timeout_s=60, logs=pool.logs)
    handed_back_s = time.monotonic() - sent
    victim.wait(timeout=30)
    exited_s = time.monotonic() - sent
    pending = store.get_trial(study, trial.id)
    assert victim.returncode == 0
    assert unacked_messages(redis_prefix) == 0, "the stopped worker acknowledged its message: nothing for the reaper"
    assert pending.retries == 0, "a graceful stop must not spend a retry"
    assert pending.resume_execution == 0 and pending.resume_epoch is not None and pending.resume_epoch >= 2
    assert preempt_checkpoint_path(settings, study, trial.id).exists()
    assert "handed back" in (pending.error or "")
    # The checkpoint is the whole model: the optimizer's state and step count come back with the weights.
    steps_done = int(keras.models.load_model(preempt_checkpoint_path(settings, study, trial.id)).optimizer.iterations)
    assert steps_done > 0 and steps_done % pending.resume_epoch == 0
    steps_per_epoch = steps_done // pending.resume_epoch

    pool.start(1, prefix="successor")
    wait_until(lambda: store.get_study(study).is_terminal, what="the study", logs=pool.logs)
    final = trials_of(store, study)
    assert store.get_study(study).status == "completed"
    assert len(final) == budget and completed(store, study) == budget, "the study ends with its exact budget"
    resumed = next(t for t in final if t.id == trial.id)
    assert resumed.retries == 0 and resumed.worker != trial.worker
    assert resumed.epochs_run == 8 and epochs_are_contiguous(store, resumed.id)
    assert f"trial {trial.id} resumes execution 0 at epoch {pending.resume_epoch}" in pool.logs()
    assert not preempt_checkpoint_path(settings, study, trial.id).exists(), "the checkpoint is cleaned up"
    saved = keras.models.load_model(settings.artifacts / (resumed.model_path or ""))
    assert int(saved.optimizer.iterations) == 8 * steps_per_epoch, "the resumed run continued the optimizer's steps"
    print(
        f"\nSIGTERM -> trial requeued in {handed_back_s:.1f} s (at epoch {pending.resume_epoch}), "
        f"worker exited in {exited_s:.1f} s; resumed by {resumed.worker}"
    )


def test_ten_sigkills_during_a_twenty_trial_study_lose_and_double_nothing(deployment, workers) -> None:
    settings, store, app = deployment(TUNER_HEARTBEAT_TIMEOUT="3", TUNER_MAX_TRIAL_RETRIES="20")
    pool = workers(settings)
    live = {proc.pid: proc for proc in pool.start(3)}
    team = Team(app, store, "chaos")
    budget = 20
    study = team.submit(quick_study("chaos", budget, parallelism=3))
    killed_at: dict[int, tuple[float, int]] = {}  # trial id -> (when, its retries then)
    killed_values: dict[int, dict[str, object]] = {}  # trial id -> the hyperparameters it was training
    requeue_s: list[float] = []
    kills = 0
    deadline = time.monotonic() + 300
    while kills < 10 and time.monotonic() < deadline and not store.get_study(study).is_terminal:
        reap_now(store, settings)
        for trial_id, (when, retries) in list(killed_at.items()):
            if store.get_trial(study, trial_id).retries > retries:
                requeue_s.append(time.monotonic() - when)
                del killed_at[trial_id]
        for trial in trials_of(store, study):
            pid = int(trial.worker.split(":")[1]) if trial.status == "running" and trial.worker else None
            if pid in live and trial.id not in killed_at:
                os.kill(pid, signal.SIGKILL)
                live.pop(pid).wait()
                killed_at[trial.id] = (time.monotonic(), trial.retries)
                killed_values[trial.id] = trial.hyperparameters
                kills += 1
                live.update({proc.pid: proc for proc in pool.start(1)})
                break
        time.sleep(0.2)
    assert kills == 10, f"only {kills} kills landed on a running trial"

    def finished() -> bool:
        reap_now(store, settings)
        return store.get_study(study).is_terminal

    wait_until(finished, timeout_s=240, what="the study after ten kills", logs=pool.logs)
    final = trials_of(store, study)
    assert store.get_study(study).status == "completed"
    assert sorted(t.number for t in final) == list(range(budget)), "each trial of the budget exactly once"
    assert all(t.status == "completed" for t in final), [(t.number, t.status, t.error) for t in final]
    assert all(epochs_are_contiguous(store, t.id) for t in final), "no epoch written twice or left over"
    assert sum(t.retries for t in final) >= 1
    by_id = {t.id: t for t in final}
    for trial_id, values in killed_values.items():  # rerun, not replaced: same trial, same configuration
        assert by_id[trial_id].retries >= 1 and by_id[trial_id].hyperparameters == values
    print(
        f"\n10 SIGKILLs: {budget}/{budget} completed, {sum(t.retries for t in final)} retries; kill -> requeued "
        f"{min(requeue_s or [0]):.1f}-{max(requeue_s or [0]):.1f} s (heartbeat timeout 3 s)"
    )


def test_workers_train_on_the_jax_backend_and_record_it(deployment, workers, monkeypatch) -> None:
    pytest.importorskip("jax")
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # the worker processes inherit it
    settings, store, app = deployment()
    pool = workers(settings)
    pool.start(1)
    team = Team(app, store, "jax")
    study = team.submit(quick_study("jax", 2, early_stopping={"patience": 1, "max_epochs": 2}))
    wait_until(lambda: store.get_study(study).is_terminal, what="the JAX study", logs=pool.logs)
    trials = trials_of(store, study)
    assert store.get_study(study).status == "completed"
    assert [t.status for t in trials] == ["completed", "completed"]
    assert all(t.environment["backend"] == "jax" and t.environment["backend_version"] for t in trials)
    assert "Keras jax backend" in pool.logs()


def test_a_worker_process_recycles_after_its_trial_limit_and_the_launcher_replaces_it(
    deployment, workers, tmp_path
) -> None:
    settings, store, app = deployment(TUNER_MAX_TRIALS_PER_PROCESS="1")
    log_path = tmp_path / "launcher.log"
    launcher = start_worker_command(settings, log_path)
    try:
        team = Team(app, store, "recycle")
        study = team.submit(quick_study("recycle", 2))
        wait_until(lambda: store.get_study(study).is_terminal, what="the study", logs=log_path.read_text)
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=120)
    trials = trials_of(store, study)
    assert [t.status for t in trials] == ["completed"] * 2
    assert len({t.worker for t in trials}) == 2, "each trial ran in a fresh process of the same slot"
    assert all(t.worker.endswith(":cpu0") for t in trials)
    assert log_path.read_text().count("recycling this worker process: 1 trials done") >= 1
