"""The dashboard's blueprint: HTML error pages, cookie settings and template filters (its security headers are
the app's, set on every answer by :mod:`tuner_service.api.security`)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from flask.sansio.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from tuner_service.errors import TunerError
from tuner_service.store.models import as_utc

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder=None)


@bp.record_once
def _configure_cookies(state: BlueprintSetupState) -> None:
    # The session cookie carries the token's digest: never readable by scripts, never sent cross-site on POST.
    state.app.config["SESSION_COOKIE_HTTPONLY"] = True
    state.app.config["SESSION_COOKIE_SAMESITE"] = "Lax"


def wants_json() -> bool:
    return request.path.endswith(".json")


def error_page(status: int, title: str, detail: str) -> tuple[Response | str, int]:
    if wants_json():
        return jsonify({"status": status, "title": title, "detail": detail}), status
    return render_template("dashboard/error.html", status=status, title=title, detail=detail), status


@bp.errorhandler(TunerError)
def _tuner_error(exc: TunerError) -> tuple[Response | str, int]:
    return error_page(exc.status, exc.title, str(exc))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[Response | str, int]:
    return error_page(exc.code or 500, exc.name, exc.description or exc.name)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> tuple[Response | str, int]:
    current_app.logger.exception("unhandled error on %s", request.path)
    return error_page(500, "Internal error", "the dashboard failed to show this page; see the server's log")


# -- template filters ------------------------------------------------------------------------------


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """``75.3`` -> ``1 m 15 s``; ``None`` -> an em dash."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"


@bp.app_template_filter("score")
def score(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}"


@bp.app_template_filter("rate")
def rate(value: float | None) -> str:
    """A learning rate: ``0.0031622`` -> ``0.00316``; ``None`` -> an em dash."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    return f"{value:.3g}"


@bp.app_template_filter("value")
def value(item: Any) -> str:
    """A hyperparameter value as a person reads it."""
    if item is None:
        return "—"
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, float):
        return f"{item:.4g}"
    return str(item)


@bp.app_template_filter("when")
def when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def elapsed_s(started: datetime | None, finished: datetime | None) -> float | None:
    """Seconds from ``started`` to ``finished`` (or to now while still going)."""
    if started is None:
        return None
    end = as_utc(finished) if finished else datetime.now(UTC)
    return (end - as_utc(started)).total_seconds()
