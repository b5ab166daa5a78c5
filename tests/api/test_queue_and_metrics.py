"""The queue view and the Prometheus metrics, over a real store with claimed and finished trials."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import digits_study, make_token
from tuner_service.search import TrialOutcome, claim_next, finish_trial

pytest.importorskip("keras_tuner")


def claim(store):
    return claim_next(store, "cpu", ticket=uuid.uuid4().hex, worker="w1", heartbeat_timeout_s=60)


def test_queue_view_lists_running_trials_and_waiting_studies_in_order(app, client, store) -> None:
    first = client.post("/api/v1/studies", json=digits_study(max_trials=3, name="first")).get_json()
    second = client.post("/api/v1/studies", json=digits_study(max_trials=3, name="second", priority="high"))
    second = second.get_json()
    running = claim(store)  # the high-priority study is served first
    assert running.study.id == second["id"]
    finish_trial(store, second["id"], running.trial.id, TrialOutcome("completed", {"val_accuracy": 0.5}, 0))
    running = claim(store)
    view = client.get("/api/v1/queue").get_json()
    assert [r["trial_id"] for r in view["running"]] == [running.trial.id]
    assert view["running"][0]["worker"] == "w1" and view["running"][0]["team"] == "alpha"
    waiting = {row["study_id"]: row for row in view["waiting"]}
    assert waiting[second["id"]]["position"] == 1
    assert waiting[second["id"]]["blocked_reason"].startswith("at its parallelism")
    assert waiting[first["id"]]["blocked_reason"] is None and waiting[first["id"]]["trials_left"] == 3
    assert waiting[first["id"]]["eta_next_start_s"] is not None  # one trial's duration is measured
    assert view["teams"][0]["team"] == "alpha" and view["teams"][0]["running"] == 1


def test_another_teams_waiting_studies_are_not_shown(app, client, store) -> None:
    client.post("/api/v1/studies", json=digits_study(name="mine"))
    other = app.test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + make_token(store, "bob", team="beta")
    view = other.get("/api/v1/queue").get_json()
    assert view["waiting"] == [] and [t["team"] for t in view["teams"]] == ["beta"]


def test_metrics_report_depth_running_outcomes_retries_and_durations(app, client, store, settings) -> None:
    client.post("/api/v1/studies", json=digits_study(max_trials=4))
    done = claim(store)
    finish_trial(store, done.study.id, done.trial.id, TrialOutcome("completed", {"val_accuracy": 0.7}, 0))
    failed = claim(store)
    finish_trial(store, failed.study.id, failed.trial.id, TrialOutcome("failed", error="boom"))
    claim(store)
    response = app.test_client().get("/metrics")  # scraped without a token
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert value[("tuner_queue_depth", (("pool", "cpu"),))] == 1  # 4 budgeted, 3 started
    assert value[("tuner_trials_running", (("pool", "cpu"),))] == 1
    assert value[("tuner_trials_finished_total", (("pool", "cpu"), ("status", "completed")))] == 1
    assert value[("tuner_trials_finished_total", (("pool", "cpu"), ("status", "failed")))] == 1
    assert value[("tuner_trial_duration_seconds_count", (("pool", "cpu"),))] == 1
    assert ("tuner_trial_retries_total", (("pool", "cpu"),)) in value
    assert value[("tuner_studies", (("status", "running"),))] == 1
