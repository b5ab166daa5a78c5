"""Outages of the database and the broker, on private servers the tests stop and start (the shared ones are
never touched): the API answers 503 problem+json meanwhile, the running trial survives, and the study
completes by itself once the server is back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_team_queue import Team, completed, quick_study, trials_of, wait_until
from tuner_service.api import broker_enqueue, broker_enqueue_job, create_app
from tuner_service.config import Settings, load_settings
from tuner_service.store import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def make_deployment(tmp_path: Path, database_url: str, broker_url: str, prefix: str, **env: str):
    settings = load_settings(
        {
            "TUNER_HOME": str(tmp_path / "home"),
            "TUNER_DATABASE_URL": database_url,
            "TUNER_BROKER_URL": broker_url,
            "TUNER_BROKER_KEY_PREFIX": prefix,
            **env,
        }
    )
    store = Store(settings.database_url)
    store.upgrade()
    app = create_app(settings, store=store, enqueue=broker_enqueue(settings), enqueue_job=broker_enqueue_job(settings))
    return settings, store, app


def start_reaper(settings: Settings, log_path: Path, every_s: float = 1.0) -> subprocess.Popen:
    from tuner_service.launcher import settings_env

    env = {**os.environ, **settings_env(settings)}
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    command = [sys.executable, "-m", "tuner_service.cli", "reaper", "--every", str(every_s)]
    return subprocess.Popen(command, env=env, stdout=log, stderr=log)


def slow_study(name: str, trials: int, epochs: int) -> dict:
    space = {**quick_study("x", 1)["search_space"], "batch_size": {"type": "fixed", "value": 16}}
    return quick_study(name, trials, search_space=space, early_stopping={"patience": 100, "max_epochs": epochs})


def test_a_database_outage_of_45_s_is_answered_with_503_and_the_running_trial_survives(
    tmp_path, private_postgres, redis_url, redis_prefix, workers
) -> None:
    settings, store, app = make_deployment(
        tmp_path, private_postgres.url, redis_url, redis_prefix, TUNER_HEARTBEAT_TIMEOUT="15", TUNER_WAKE_AFTER="5"
    )
    pool = workers(settings)
    pool.start(1)
    reaper = start_reaper(settings, tmp_path / "reaper.log")
    team = Team(app, store, "outage")
    study = team.submit(slow_study("outage", 2, epochs=60))
    wait_until(
        lambda: any(t.status == "running" and t.epochs_run >= 2 for t in trials_of(store, study)),
        what="a trial in the middle of training",
        logs=pool.logs,
    )
    survivor = next(t for t in trials_of(store, study) if t.status == "running")
    private_postgres.stop()
    stopped = time.monotonic()
    try:
        answers = []
        while time.monotonic() - stopped < 45:
            answers.append(team.client.get(f"/api/v1/studies/{study}"))
            time.sleep(3)
        health = team.client.get("/healthz")
    finally:
        private_postgres.start()
    assert {r.status_code for r in answers} == {503}
    assert all(r.mimetype == "application/problem+json" and r.headers.get("Retry-After") for r in answers)
    assert answers[0].get_json()["dependency"] == "database"
    assert health.status_code == 503 and health.mimetype == "application/problem+json"
    assert health.get_json()["dependency"] == "database"
    assert team.client.get(f"/api/v1/studies/{study}").status_code == 200, "the API answers again at once"

    wait_until(lambda: store.get_study(study).is_terminal, timeout_s=240, what="the study", logs=pool.logs)
    reaper.terminate()
    reaper.wait(timeout=30)
    trials = trials_of(store, study)
    assert store.get_study(study).status == "completed" and completed(store, study) == 2
    kept = next(t for t in trials if t.id == survivor.id)
    assert kept.retries == 0 and kept.worker == survivor.worker, "the trial survived the outage where it ran"
    epochs = sorted(e.epoch for e in store.epochs(kept.id))
    assert epochs == list(range(60)), "epochs trained during the outage were stored once it ended"
    outage_lines = [line for line in pool.logs(tail=None).splitlines() if "unavailable" in line and "heartbeat" in line]
    assert len(outage_lines) == 1, outage_lines  # one line per outage, not one per failed beat
    print(f"\ndatabase down 45 s: {len(answers)} answers, all 503; trial {kept.number} survived; 2/2 completed")


def test_a_redis_crash_mid_study_loses_nothing_and_submissions_meanwhile_are_stored(
    tmp_path, postgres_url, private_redis, workers
) -> None:
    settings, store, app = make_deployment(
        tmp_path, postgres_url, private_redis.url, "", TUNER_HEARTBEAT_TIMEOUT="10", TUNER_WAKE_AFTER="3"
    )
    pool = workers(settings)
    pool.start(1)
    reaper = start_reaper(settings, tmp_path / "reaper.log")
    team = Team(app, store, "broker")
    study = team.submit(slow_study("broker", 3, epochs=8))
    wait_until(lambda: completed(store, study) >= 1 and any(t.status == "running" for t in trials_of(store, study)),
               what="a second trial running", logs=pool.logs)  # fmt: skip
    private_redis.kill()
    down = time.monotonic()
    doc = quick_study("submitted-while-down", 2)
    first = team.client.post("/api/v1/studies", json=doc, headers={"Idempotency-Key": "retry-me-1"})
    again = team.client.post("/api/v1/studies", json=doc, headers={"Idempotency-Key": "retry-me-1"})
    health = team.client.get("/healthz")
    time.sleep(max(0.0, 5 - (time.monotonic() - down)))
    private_redis.start()  # empty: every message it held is gone
    assert first.status_code == 202, first.get_json()
    assert "broker is unavailable" in first.get_json()["note"]
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert health.status_code == 503 and health.get_json()["dependency"] == "broker"
    late = first.get_json()["id"]
    for sid, budget in ((study, 3), (late, 2)):
        wait_until(lambda sid=sid: store.get_study(sid).is_terminal, timeout_s=240, what=f"study {sid}",
                           logs=lambda: pool.logs() + (tmp_path / "reaper.log").read_text())  # fmt: skip
        trials = trials_of(store, sid)
        assert store.get_study(sid).status == "completed"
        assert sorted(t.number for t in trials) == list(range(budget)) and all(t.status == "completed" for t in trials)
    assert len([s for s in store.list_studies(limit=50).items if s.name == "submitted-while-down"]) == 1
    reaper.terminate()
    reaper.wait(timeout=30)
    print("\nRedis killed and restarted: both studies completed, the retried submission stored once")
