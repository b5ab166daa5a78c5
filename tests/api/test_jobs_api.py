"""The range-test and rerun endpoints: validation, what gets stored and enqueued, and team scoping."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import digits_study, make_token
from tuner_service.api import create_app
from tuner_service.search import TrialOutcome, claim_next, finish_trial

pytest.importorskip("keras_tuner")


@pytest.fixture
def sent():
    return []


@pytest.fixture
def api(settings, store, sent):
    app = create_app(settings, store=store, enqueue=lambda pool, n: None, enqueue_job=lambda p, j: sent.append((p, j)))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + make_token(store, "ana")
    return app, client


def jobs_count(store) -> int:
    return len(store.list_jobs(kind="lr_range_test")) + len(store.list_jobs(kind="rerun"))


@pytest.mark.parametrize(
    ("body", "status", "fields"),
    [
        ({"dataset": "digits", "task": "multiclass", "min_lr": 1.0, "max_lr": 0.01}, 422, ["min_lr"]),
        ({"dataset": "digits", "task": "multiclass", "min_lr": 0}, 422, ["min_lr"]),
        ({"dataset": "digits", "task": "multiclass", "max_lr": -1}, 422, ["max_lr"]),
        ({"dataset": "nope", "task": "multiclass"}, 422, ["dataset"]),
        ({"dataset": "diabetes", "task": "multiclass"}, 422, ["task.type"]),
        ([1, 2], 422, ["body"]),
    ],
)
def test_a_bad_range_test_is_refused_and_nothing_is_stored(api, store, sent, body, status, fields) -> None:
    _, client = api
    response = client.post("/api/v1/lr-range-tests", json=body)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert [e["field"] for e in response.get_json()["errors"]] == fields
    assert jobs_count(store) == 0 and sent == []


def test_a_range_test_is_queued_for_a_worker(api, store, sent) -> None:
    app, client = api
    response = client.post("/api/v1/lr-range-tests", json={"dataset": "digits", "task": "multiclass"})
    assert response.status_code == 202
    job = response.get_json()
    assert job["status"] == "queued" and job["kind"] == "lr_range_test"
    assert sent == [("cpu", job["id"])]
    assert client.get(response.headers["Location"]).get_json()["id"] == job["id"]
    assert [t["id"] for t in client.get("/api/v1/lr-range-tests").get_json()["items"]] == [job["id"]]
    other = app.test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + make_token(store, "bob", team="beta")
    assert other.get(response.headers["Location"]).status_code == 404
    assert other.get("/api/v1/lr-range-tests").get_json()["items"] == []


def finished_trial(client, store):
    study = client.post("/api/v1/studies", json=digits_study()).get_json()
    claimed = claim_next(store, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
    return study, claimed


def test_rerun_validation(api, store, sent) -> None:
    _, client = api
    study, claimed = finished_trial(client, store)
    url = f"/api/v1/studies/{study['id']}/trials/{claimed.trial.number}/rerun"
    assert client.post(url, json={}).status_code == 409  # still running
    finish_trial(store, study["id"], claimed.trial.id, TrialOutcome("completed", {"val_accuracy": 0.9}, 0))
    bad = client.post(url, json={"repeats": 0})
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "repeats"
    assert client.post(url, json={"repeats": 2, "seeds": 1}).get_json()["errors"][0]["field"] == "seeds"
    assert client.post(f"/api/v1/studies/{study['id']}/trials/999/rerun", json={}).status_code == 404
    assert jobs_count(store) == 0 and sent == []
    ok = client.post(url, json={"repeats": 2})
    assert ok.status_code == 202 and sent == [("cpu", ok.get_json()["id"])]
    assert client.get(ok.headers["Location"]).get_json()["spec"] == {"repeats": 2}


def test_learning_rate_from_needs_a_finished_test_of_the_team(api, store) -> None:
    _, client = api
    test = client.post("/api/v1/lr-range-tests", json={"dataset": "digits", "task": "multiclass"}).get_json()
    doc = digits_study(learning_rate_from={"lr_range_test": test["id"], "factor": 10})
    response = client.post("/api/v1/studies", json=doc)
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == "learning_rate_from.lr_range_test"
    store.start_job(test["id"], "w")
    store.finish_job(test["id"], status="completed", result={"suggestion": {"suggested_lr": 0.02}, "curve": []})
    response = client.post("/api/v1/studies", json=doc)
    assert response.status_code == 201
    space = response.get_json()["spec"]["search_space"]["learning_rate"]
    assert space["min"] == pytest.approx(0.002) and space["max"] == pytest.approx(0.2) and space["sampling"] == "log"
    bad = client.post(
        "/api/v1/studies", json=digits_study(learning_rate_from={"lr_range_test": test["id"], "factor": 1})
    )
    assert bad.get_json()["errors"][0]["field"] == "learning_rate_from.factor"
