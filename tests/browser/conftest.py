"""Fixtures for the dashboard: the real app on a migrated SQLite store, signed-in test clients, and studies
with real stored trials and epochs (written through the Store, as a worker writes them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.api.conftest import Recorder
from tests.conftest import digits_study, make_token
from tuner_service.api import create_app
from tuner_service.config import Settings
from tuner_service.store import Store, StudyRecord
from tuner_service.study import submit_study


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def jobs_sent() -> list[tuple[str, int]]:
    """The ``(pool, job id)`` of each range test or rerun the app enqueued, instead of a broker message."""
    return []


@pytest.fixture
def app(settings: Settings, store: Store, recorder: Recorder, jobs_sent: list[tuple[str, int]]) -> Flask:
    app = create_app(
        settings, store=store, enqueue=recorder, enqueue_job=lambda pool, job: jobs_sent.append((pool, job))
    )
    app.config["TESTING"] = True
    return app


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: FlaskClient, token: str) -> FlaskClient:
    page = client.get("/signin")
    response = client.post("/signin", data={"token": token, "csrf_token": csrf_of(page.text), "next": "/"})
    assert response.status_code == 302, response.text
    return client


@pytest.fixture
def member_token(store: Store) -> str:
    return make_token(store, "ann", team="alpha")


@pytest.fixture
def member(app: Flask, member_token: str) -> FlaskClient:
    """A member of team alpha, signed in."""
    return sign_in(app.test_client(), member_token)


@pytest.fixture
def submit(store: Store, settings: Settings, recorder: Recorder) -> Callable[..., StudyRecord]:
    """Store a study for a team, as the API does."""

    def make(team: str = "alpha", **overrides: Any) -> StudyRecord:
        team_id = store.get_team(team).id
        return submit_study(store, settings, digits_study(**overrides), recorder, team_id=team_id)

    return make


ENVIRONMENT = {
    "seed": 1234, "python": "3.12.3", "numpy": "1.26.4", "tensorflow": "2.16.1", "keras": "3.3.3",
    "keras_tuner": "1.4.7", "backend": "tensorflow", "device": "cpu",
}  # fmt: skip


def add_trials(store: Store, study_id: int, results: list[tuple[dict[str, Any], float | None]]) -> list[int]:
    """Finished trials with three epochs each, the way a worker reports them; returns their numbers (what
    pages and URLs show)."""
    ids = []
    for values, score in results:

        def start(tx: Any, values: dict[str, Any] = values) -> Any:
            number = tx.count()
            return tx.add_trial(
                number=number,
                oracle_trial_id=f"o{number}",
                ticket=f"s{study_id}-t{number}",
                hyperparameters=values,
                oracle_trial_state={},
                worker="cpu0",
            )

        trial = store.with_study_lock(study_id, start)
        final = score if score is not None else 0.5
        for epoch, value in enumerate([final - 0.2, final, final - 0.05]):
            store.record_epoch(
                trial.id,
                0,
                epoch,
                {
                    "loss": 1.0 - value,
                    "accuracy": value + 0.02,
                    "val_loss": 1.1 - value,
                    "val_accuracy": value,
                },  # fmt: skip
            )
        status = "completed" if score is not None else "failed"
        store.with_study_lock(
            study_id,
            lambda tx, trial=trial, status=status, score=score: tx.finish_trial(
                trial.id,
                status=status,
                score=score,
                best_epoch=1 if score is not None else None,
                metrics={"val_accuracy": score, "val_loss": 0.3} if score is not None else None,
                error=None if score is not None else "ValueError: the loss diverged",
                environment=ENVIRONMENT if score is not None else None,
            ),
        )
        ids.append(trial.number)
    return ids
