"""End to end on the embedded default: `tuner-service up` as a real process (SQLite database and broker,
a real worker process), a study submitted over HTTP, trained, and ranked on the leaderboard."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.conftest import digits_study, free_port, running_up

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def service(settings, tmp_path: Path):
    with running_up(settings, tmp_path / "up.log") as base:
        yield base, tmp_path / "up.log"


def test_digits_study_over_http_reaches_the_leaderboard(service, settings) -> None:
    base, log = service
    token_file = settings.home / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    http = requests.Session()
    assert http.get(base + "/api/v1/studies", timeout=10).status_code == 401
    http.headers["Authorization"] = f"Bearer {token_file.read_text().strip()}"
    response = http.post(base + "/api/v1/studies", json=digits_study(max_trials=4), timeout=10)
    assert response.status_code == 201, response.text
    study = response.json()
    assert study["status"] == "queued"

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        study = http.get(f"{base}/api/v1/studies/{study['id']}", timeout=10).json()
        if study["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.5)
    assert study["status"] == "completed", log.read_text()[-5000:]
    assert study["progress"]["done"] == 4
    assert study["progress"]["trials"]["completed"] == 4

    board = http.get(f"{base}/api/v1/leaderboard", params={"dataset": "digits"}, timeout=10).json()
    scores = [row["score"] for row in board["items"]]
    assert board["total"] == 4 and len(scores) == 4
    assert scores == sorted(scores, reverse=True)  # val_accuracy: best (highest) first
    assert board["items"][0]["trial_id"] == study["best_trial_id"]
    assert scores[0] == pytest.approx(study["best_score"])
    assert all(0.0 <= s <= 1.0 for s in scores)

    trials = http.get(f"{base}/api/v1/studies/{study['id']}/trials", timeout=10).json()["items"]
    assert sorted(t["number"] for t in trials) == [0, 1, 2, 3]
    detail = http.get(f"{base}/api/v1/studies/{study['id']}/trials/{trials[0]['number']}", timeout=10).json()
    assert detail["number"] == trials[0]["number"] and detail["id"] == trials[0]["id"]
    assert len(detail["epochs"]) == detail["epochs_run"] >= 1
    assert "val_accuracy" in detail["epochs"][0]["metrics"]
    # Epochs are counted from 1 for people, best_epoch included.
    assert [e["epoch"] for e in detail["epochs"]] == list(range(1, detail["epochs_run"] + 1))
    assert 1 <= detail["best_epoch"] <= detail["epochs_run"]

    model = http.get(f"{base}/api/v1/studies/{study['id']}/best-model", timeout=30)
    assert model.status_code == 200
    assert model.content[:2] == b"PK"  # a .keras file is a zip archive


def test_the_embedded_broker_forgets_delivered_messages(settings) -> None:
    """kombu's SQLAlchemy transport only hides a delivered message; the local reaper deletes them."""
    from sqlalchemy import create_engine, text

    from workers.app import celery_for, enqueue_trials
    from workers.embedded import purge_delivered

    celery = celery_for(settings)
    enqueue_trials(celery, "cpu", 3)
    engine = create_engine(settings.broker_url.split("+", 1)[1])
    with engine.begin() as conn:
        conn.execute(text("UPDATE kombu_message SET visible = 0 WHERE id IN (SELECT id FROM kombu_message LIMIT 2)"))
    assert purge_delivered(settings.broker_url) == 2
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM kombu_message WHERE visible = 1")).scalar_one() == 1
    engine.dispose()


def test_stopping_the_service_leaves_no_trial_stranded(settings) -> None:
    """A worker told to stop hands its trial back (or finishes it) and hands any further message back instead
    of starting a trial that its shutdown would kill (the embedded broker gives a stopping worker one more
    message): nothing is left running."""
    from tuner_service.client import Client
    from tuner_service.launcher import LocalService
    from tuner_service.store import Store

    service = LocalService(settings, port=free_port(), workers=1, reap_every_s=3600, access_log=False).start()
    try:
        client = Client(service.url, token=service.admin_token)
        study = client.submit_study(digits_study(max_trials=8, early_stopping={"patience": 50, "max_epochs": 12}))
        deadline = time.monotonic() + 120
        while client.study(study["id"])["progress"]["done"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop_requested = datetime.now(UTC)
        service.stop()
    store = Store(settings.database_url)
    counts = store.trial_counts(study["id"])
    trials = store.list_trials(study["id"], limit=50).items
    store.dispose()
    assert counts.get("running", 0) == 0, counts
    assert counts.get("completed", 0) >= 1
    late = [
        t
        for t in trials
        if (t.started_at if t.started_at.tzinfo else t.started_at.replace(tzinfo=UTC)) > stop_requested
    ]
    # One claimed while the stop was on its way is handed back, pending with its retries unchanged, not stranded.
    assert all(t.status == "pending" and t.retries == 0 for t in late), [(t.status, t.retries) for t in late]
