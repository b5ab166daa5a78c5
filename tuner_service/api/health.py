"""Liveness and readiness: ``GET /healthz``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from tuner_service.api import services
from tuner_service.api.openapi import describe

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@describe(
    tag="health",
    responses={200: "The service and its database answer", 503: "The database does not answer"},
    returns="Health",
)
def healthz() -> tuple[Response, int]:
    """Health check: the process is up and its database answers."""
    store = services().store
    try:
        store.list_datasets(limit=1)
    except Exception as exc:  # any database failure means "not ready", reported, not raised
        return jsonify({"status": "unavailable", "database": str(exc).splitlines()[0]}), 503
    return jsonify({"status": "ok", "database": store.engine.dialect.name}), 200
