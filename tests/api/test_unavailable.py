"""Dependencies that do not answer: 503 problem+json with Retry-After naming the database or the broker,
and idempotent study submission while the broker is away (the study is stored once, answered 202)."""

from __future__ import annotations

import logging

from tests.conftest import digits_study, free_port, make_token
from tuner_service.api import broker_enqueue, broker_enqueue_job, create_app
from tuner_service.config import load_settings
from tuner_service.store import Store


def test_a_database_that_does_not_answer_gets_503_with_retry_after_and_one_log_line(tmp_path, caplog) -> None:
    settings = load_settings(
        {"TUNER_HOME": str(tmp_path), "TUNER_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/gone"}
    )
    store = Store(settings.database_url)
    client = create_app(settings, store=store, enqueue=lambda p, n: None, enqueue_job=lambda p, j: None).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer tks_whatever"
    with caplog.at_level(logging.WARNING):
        answers = [client.get("/api/v1/studies") for _ in range(3)]
    for response in answers:
        assert response.status_code == 503 and response.mimetype == "application/problem+json"
        assert response.headers["Retry-After"].isdigit()
        assert response.get_json()["dependency"] == "database"
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1, "one line per outage"
    assert not [r for r in caplog.records if r.exc_info], "no traceback per request"
    health = client.get("/healthz")
    assert health.status_code == 503 and health.mimetype == "application/problem+json"
    assert health.get_json()["dependency"] == "database" and health.headers["Retry-After"]
    store.dispose()


def test_a_broker_that_does_not_answer_stores_the_study_once_per_idempotency_key(tmp_path) -> None:
    settings = load_settings(
        {"TUNER_HOME": str(tmp_path), "TUNER_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    )  # nothing listens there
    store = Store(settings.database_url)
    store.upgrade()
    app = create_app(settings, store=store, enqueue=broker_enqueue(settings), enqueue_job=broker_enqueue_job(settings))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + make_token(store, "ana")
    first = client.post("/api/v1/studies", json=digits_study(), headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and "broker is unavailable" in first.get_json()["note"]
    retry = client.post("/api/v1/studies", json=digits_study(), headers={"Idempotency-Key": "k-1"})
    assert retry.status_code == 200 and retry.get_json()["id"] == first.get_json()["id"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    other = client.post("/api/v1/studies", json=digits_study(), headers={"Idempotency-Key": "k-2"})
    assert other.status_code == 202 and other.get_json()["id"] != first.get_json()["id"]
    bad = client.post("/api/v1/studies", json=digits_study(), headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 400 and bad.get_json()["errors"][0]["field"] == "Idempotency-Key"
    assert store.list_studies(limit=10).total == 2
    health = client.get("/healthz")
    assert health.status_code == 503 and health.get_json()["dependency"] == "broker"
    store.dispose()
