"""A team deployment for the integration tests: PostgreSQL store, Redis broker, the real API app."""

from __future__ import annotations

import pytest

from tests.conftest import make_token
from tuner_service.api import broker_enqueue, broker_enqueue_job, create_app
from tuner_service.config import load_settings
from tuner_service.store import Store


@pytest.fixture
def deployment(tmp_path, postgres_url, redis_url, redis_prefix):
    """Make ``(settings, store, app)`` on a fresh PostgreSQL database and Redis; ``env`` overrides settings."""
    stores: list[Store] = []

    def make(**env: str):
        settings = load_settings(
            {
                "TUNER_HOME": str(tmp_path / "home"),
                "TUNER_DATABASE_URL": postgres_url,
                "TUNER_BROKER_URL": redis_url,
                "TUNER_BROKER_KEY_PREFIX": redis_prefix,
                "TUNER_HEARTBEAT_TIMEOUT": "60",
                **env,
            }
        )
        store = Store(settings.database_url)
        store.upgrade()
        stores.append(store)
        app = create_app(
            settings, store=store, enqueue=broker_enqueue(settings), enqueue_job=broker_enqueue_job(settings)
        )
        return settings, store, app

    yield make
    for store in stores:
        store.dispose()


@pytest.fixture
def team(deployment):
    """``(settings, store, client)``: the API as a member of team ``alpha`` sees it."""
    settings, store, app = deployment()
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + make_token(store, "ana")
    return settings, store, client
