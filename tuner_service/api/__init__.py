"""The REST API: a Flask application factory with one blueprint per resource under ``/api/v1``.

Importing this package never imports TensorFlow; the API only validates, stores and enqueues.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app

from tuner_service.config import Settings, load_settings, secure_home, session_secret
from tuner_service.store import Store

Enqueue = Callable[[str, int], object]  # (pool, count)
EnqueueJob = Callable[[str, int], object]  # (pool, job id)


@dataclass(frozen=True)
class Services:
    """What the request handlers use: settings, the store, and the way to enqueue trials."""

    settings: Settings
    store: Store
    enqueue: Enqueue
    enqueue_job: EnqueueJob


def services() -> Services:
    return current_app.extensions["tuner"]


def broker_enqueue(settings: Settings) -> Enqueue:
    """Enqueue through Celery on the configured broker (imported here, not at module load)."""

    def enqueue(pool: str, count: int) -> object:
        from workers.app import celery_for, enqueue_trials, sending

        with sending():
            return enqueue_trials(celery_for(settings), pool, count)

    return enqueue


def broker_enqueue_job(settings: Settings) -> EnqueueJob:
    def enqueue_job(pool: str, job_id: int) -> object:
        from workers.app import celery_for, sending
        from workers.app import enqueue_job as send

        with sending():
            return send(celery_for(settings), pool, job_id)

    return enqueue_job


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    enqueue: Enqueue | None = None,
    enqueue_job: EnqueueJob | None = None,
) -> Flask:
    """Build the API for ``settings`` (default: from the environment); the schema must be migrated."""
    from tuner_service.api import (
        auth,
        datasets,
        health,
        hypermodels,
        jobs,
        leaderboard,
        metrics,
        openapi,
        params,
        problems,
        queue,
        security,
        studies,
        team,
    )

    settings = settings or load_settings()
    secure_home(settings)
    store = store or Store(settings.database_url)
    app = Flask(__name__)
    app.secret_key = session_secret(settings)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes  # uploads get more: see params.install
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["tuner"] = Services(
        settings, store, enqueue or broker_enqueue(settings), enqueue_job or broker_enqueue_job(settings)
    )
    problems.install(app)
    security.install(app, settings)
    auth.install(app)
    params.install(app)  # after auth: an unknown caller hears 401 before anything about its input
    blueprints = (
        health.bp,
        metrics.bp,
        datasets.bp,
        studies.bp,
        leaderboard.bp,
        queue.bp,
        jobs.bp,
        hypermodels.bp,
        team.bp,
        openapi.bp,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    from tuner_service.dashboard import bp as dashboard  # the web pages under /, on the same accounts

    app.register_blueprint(dashboard)
    return app
