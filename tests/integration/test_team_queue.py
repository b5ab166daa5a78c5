"""The shared queue with real worker processes on Redis and PostgreSQL: fairness between teams, priority,
quotas, a SIGKILLed worker and a flushed broker. Trials are tiny (one epoch) so the order is what counts."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import pytest

from tests.conftest import bearer, delete_redis_keys, make_token, wait_for_study
from tuner_service.store import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def quick_study(name: str, trials: int, **overrides: object) -> dict:
    """Fixed, small model; a dummy parameter gives each trial distinct values (the builder ignores it)."""
    doc: dict = {
        "name": name,
        "dataset": "digits",
        "task": {"type": "multiclass"},
        "objective": "val_accuracy",
        "search_space": {
            "hidden_layers": {"type": "fixed", "value": 1},
            "neurons": {"type": "fixed", "value": 16},
            "learning_rate": {"type": "fixed", "value": 0.01},
            "batch_size": {"type": "fixed", "value": 256},
            "trial_seed": {"type": "int", "min": 0, "max": 1_000_000},
        },
        "max_trials": trials,
        "early_stopping": {"patience": 1, "max_epochs": 1},
    }
    doc.update(overrides)
    return doc


class Team:
    """A team's member, talking to the API."""

    def __init__(self, app, store: Store, name: str, **options: object) -> None:
        self.client = app.test_client()
        token = make_token(store, f"{name}-member", team=name, **options)
        self.client.environ_base.update({"HTTP_" + k.upper(): v for k, v in bearer(token).items()})

    def submit(self, doc: dict) -> int:
        response = self.client.post("/api/v1/studies", json=doc)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def cancel(self, study_id: int) -> None:
        self.client.post(f"/api/v1/studies/{study_id}/cancel")


def trials_of(store: Store, study_id: int):
    return store.list_trials(study_id, sort="created", limit=500).items


def wait_until(predicate, timeout_s: float = 180.0, what: str = "condition", logs=None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{logs() if logs else ''}")


def completed(store: Store, study_id: int) -> int:
    return store.trial_counts(study_id).get("completed", 0)


def test_a_newcomer_team_starts_after_at_most_one_more_trial(deployment, workers) -> None:
    settings, store, app = deployment()
    pool = workers(settings)
    pool.start(1)
    a, b = Team(app, store, "team-a"), Team(app, store, "team-b")
    big = a.submit(quick_study("a-40", 40))
    wait_until(lambda: completed(store, big) >= 2, what="team A's first trials", logs=pool.logs)
    submitted = datetime.now(UTC)
    small = b.submit(quick_study("b-5", 5))
    assert wait_for_study(store, small, logs=pool.logs).status == "completed"
    a.cancel(big)
    first_b = min(t.started_at for t in trials_of(store, small))
    a_between = [t for t in trials_of(store, big) if submitted < _aware(t.started_at) < _aware(first_b)]
    assert len(a_between) <= 1, f"{len(a_between)} more A trials started before B's first"
    print(f"\nnewcomer: {len(a_between)} more team-A trial(s) started before team B's first")


def test_worker_time_follows_the_share_weights(deployment, workers) -> None:
    settings, store, app = deployment()
    pool = workers(settings)
    a, b = Team(app, store, "heavy", share_weight=2.0), Team(app, store, "light", share_weight=1.0)
    study_a, study_b = a.submit(quick_study("a", 200)), b.submit(quick_study("b", 200))
    pool.start(1)
    wait_until(lambda: completed(store, study_a) + completed(store, study_b) >= 24, what="24 trials", logs=pool.logs)
    a.cancel(study_a)
    b.cancel(study_b)
    seconds = {
        team: sum(t.duration_s for t in trials_of(store, sid) if t.status == "completed")
        for team, sid in (("a", study_a), ("b", study_b))
    }
    share_a = seconds["a"] / (seconds["a"] + seconds["b"])
    counts = {team: completed(store, sid) for team, sid in (("a", study_a), ("b", study_b))}
    print(f"\nfair share 2:1 -> team a {share_a:.1%} of worker time ({counts['a']} trials), b {counts['b']} trials")
    assert 2 / 3 * 0.85 <= share_a <= 2 / 3 * 1.15, f"team a had {share_a:.1%} of the worker time, wanted 66.7% ± 15%"


def test_a_high_priority_study_submitted_last_starts_next(deployment, workers) -> None:
    settings, store, app = deployment()
    pool = workers(settings)
    pool.start(1)
    team = Team(app, store, "solo")
    low = team.submit(quick_study("low", 30, priority="low"))
    wait_until(lambda: completed(store, low) >= 1, what="the low study's first trial", logs=pool.logs)
    normal = team.submit(quick_study("normal", 3))
    before_high = datetime.now(UTC)
    high = team.submit(quick_study("high", 3, priority="high"))
    assert wait_for_study(store, high, logs=pool.logs).status == "completed"
    assert wait_for_study(store, normal, logs=pool.logs).status == "completed"
    team.cancel(low)
    started = sorted(
        (_aware(t.started_at), sid) for sid in (low, normal, high) for t in trials_of(store, sid)
        if _aware(t.started_at) > before_high
    )  # fmt: skip
    order = [sid for _, sid in started]
    # The one worker may start a normal trial while the high study is being submitted (it does not exist yet);
    # after that, the high study's three trials, then normal's, and no low trial before normal's are done.
    if order and order[0] == normal:
        order = order[1:]
    assert order[:3] == [high, high, high], order
    normal_left = sum(1 for sid in order if sid == normal)
    assert order[3 : 3 + normal_left] == [normal] * normal_left, order
    assert len(trials_of(store, normal)) == 3


def test_a_team_at_its_concurrency_quota_gets_no_more_running_trials(deployment, workers) -> None:
    settings, store, app = deployment()
    pool = workers(settings)
    pool.start(2)
    team = Team(app, store, "capped", max_concurrent_trials=1)
    study = team.submit(quick_study("capped", 6, parallelism=2, early_stopping={"patience": 1, "max_epochs": 4}))
    reasons: set[str] = set()

    def watch() -> bool:
        for row in team.client.get("/api/v1/queue").get_json()["waiting"]:
            if row["study_id"] == study and row["blocked_reason"]:
                reasons.add(row["blocked_reason"])
        return store.get_study(study).is_terminal

    wait_until(watch, what="the capped study to finish", logs=pool.logs)
    assert store.get_study(study).status == "completed"
    spans = sorted((_aware(t.started_at), _aware(t.finished_at)) for t in trials_of(store, study))
    overlaps = [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    assert not overlaps, "two trials of a team with a quota of 1 ran at once"
    assert any("quota of 1 concurrent trials" in r for r in reasons), reasons


def test_a_flushed_broker_is_recovered_by_the_reaper(deployment, workers, redis_prefix) -> None:
    settings, store, app = deployment(TUNER_WAKE_AFTER="1")
    pool = workers(settings)
    worker = pool.start(1)[0]
    team = Team(app, store, "flush")
    study = team.submit(quick_study("flush", 4))
    wait_until(lambda: completed(store, study) >= 1, what="a first trial", logs=pool.logs)
    worker.send_signal(signal.SIGTERM)  # warm shutdown: the trial in hand finishes
    worker.wait(timeout=60)
    assert delete_redis_keys(redis_prefix) > 0  # every message of this deployment is gone
    from workers.app import celery_for, enqueue_trials, reap_through, waiting_messages

    celery = celery_for(settings)
    assert not waiting_messages(celery, "cpu")
    enqueue_trials(celery, "gpu", 2)  # what the reaper counts before waking: messages no worker took yet
    assert waiting_messages(celery, "gpu") == 2
    delete_redis_keys(redis_prefix)
    done_before = store.trial_counts(study)
    pool.start(1)
    time.sleep(4)
    assert store.trial_counts(study) == done_before, "without messages nothing should run"
    assert not store.get_study(study).is_terminal
    report = reap_through(celery, store, settings)
    assert report.woken >= 1
    assert wait_for_study(store, study, logs=pool.logs).status == "completed"
    assert len(trials_of(store, study)) == 4


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_a_study_never_runs_on_a_pool_it_did_not_ask_for(deployment, workers) -> None:
    settings, store, app = deployment()
    pool = workers(settings)
    pool.start(1)  # a CPU worker only
    team = Team(app, store, "pools")
    gpu_study = team.submit(quick_study("wants-a-gpu", 2, resources={"gpu": 1}))
    cpu_study = team.submit(quick_study("cpu-is-fine", 2))
    assert wait_for_study(store, cpu_study, logs=pool.logs).status == "completed"
    time.sleep(2)
    assert trials_of(store, gpu_study) == [], "a GPU study ran on a CPU worker"
    waiting = team.client.get("/api/v1/queue?pool=gpu").get_json()["waiting"]
    assert [row["study_id"] for row in waiting] == [gpu_study]
    assert all(t.pool == "cpu" for t in trials_of(store, cpu_study))
