"""Liveness and readiness: ``GET /healthz``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from tuner_service.api import Services, services
from tuner_service.api.openapi import describe
from tuner_service.api.problems import problem

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@describe(
    tag="health",
    responses={
        200: "The service, its database and its broker answer",
        503: "A dependency does not answer (problem+json naming it in `dependency`)",
    },
    returns="Health",
)
def healthz() -> Response | tuple[Response, int]:
    """Health check: the process is up and its database (and, for Redis, its broker) answer."""
    svc = services()
    checks = {"database": _database(svc), "broker": _broker(svc)}
    down = [name for name, state in checks.items() if state != "ok"]
    if down:
        detail = "; ".join(f"{name}: {checks[name]}" for name in down)
        response = problem(
            503, "Service unavailable", detail, slug=f"{down[0]}-unavailable", dependency=down[0], checks=checks
        )
        response.headers["Retry-After"] = "5"
        return response
    return jsonify({"status": "ok", "database": svc.store.engine.dialect.name}), 200


def _database(svc: Services) -> str:
    try:
        svc.store.list_datasets(limit=1)
    except Exception as exc:  # noqa: BLE001 - any database failure means "not ready", reported, not raised
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "ok"


def _broker(svc: Services) -> str:
    if svc.settings.is_embedded_broker:
        return "ok"  # a SQLite file next to the database: nothing separate to be down
    from workers.app import broker_ping, celery_for

    try:
        broker_ping(celery_for(svc.settings), timeout_s=1.0)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "ok"
