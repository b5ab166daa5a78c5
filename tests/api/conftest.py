"""Fixtures for the REST API: the real application on a migrated SQLite store, with a recording enqueue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from tests.conftest import make_token
from tuner_service.api import create_app
from tuner_service.config import Settings
from tuner_service.store import Store


class Recorder:
    """The ``enqueue`` the app is built with: it remembers each ``(pool, count)`` instead of using a broker."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, pool: str, count: int) -> None:
        self.calls.append((pool, count))


@dataclass(frozen=True)
class Footprint:
    """What a request could have left behind: rows, files under the artifacts folder, enqueued work."""

    studies: int
    trials: int
    datasets: int
    files: tuple[str, ...]
    enqueued: int


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app(settings: Settings, store: Store, recorder: Recorder) -> Flask:
    return create_app(settings, store=store, enqueue=recorder)


@pytest.fixture
def member_token(store: Store) -> str:
    """A member of team ``alpha``: may read and write its team's objects."""
    return make_token(store, "member-of-alpha")


def authorized(client: FlaskClient, token: str) -> FlaskClient:
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def client(app: Flask, member_token: str) -> FlaskClient:
    """The API as a member of team ``alpha`` sees it."""
    return authorized(app.test_client(), member_token)


@pytest.fixture
def small_upload_client(settings: Settings, store: Store, recorder: Recorder, member_token: str) -> FlaskClient:
    """The API with a 1000-byte upload limit, sharing the store, artifacts and recorder of ``client``."""
    app = create_app(settings.with_overrides(max_upload_bytes=1000), store=store, enqueue=recorder)
    return authorized(app.test_client(), member_token)


@pytest.fixture
def footprint(settings: Settings, store: Store, recorder: Recorder) -> Callable[[], Footprint]:
    """A function that measures the service's stored state now, to compare before and after a request."""

    def measure() -> Footprint:
        with store.engine.connect() as conn:
            trials = conn.execute(text("SELECT count(*) FROM trials")).scalar_one()
        return Footprint(
            studies=store.list_studies().total,
            trials=trials,
            datasets=store.list_datasets().total,
            files=_files(settings.artifacts),
            enqueued=len(recorder.calls),
        )

    return measure


def _files(root: Path) -> tuple[str, ...]:
    if not root.exists():
        return ()
    return tuple(sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()))
