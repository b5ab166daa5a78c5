"""RFC 9457 problem details: every error leaves the API as ``application/problem+json``."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

from tuner_service.errors import InvalidInput, NotFound, ServiceUnavailable, TunerError
from tuner_service.outage import OutageLog

PROBLEM_TYPE = "urn:tuner-service:problem:"


def problem(status: int, title: str, detail: str, *, slug: str | None = None, **extra: Any) -> Response:
    body = {
        "type": PROBLEM_TYPE + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
        **extra,
    }
    return Response(json.dumps(body), status=status, mimetype="application/problem+json")


def bad_request(field: str, reason: str, status: int = 400) -> Response:
    """A problem for a malformed query parameter or request part, naming it."""
    return problem(status, "Bad request", f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


def install(app: Flask) -> None:
    """Translate core exceptions and HTTP errors into problem+json, once, at the edge."""

    @app.errorhandler(InvalidInput)
    def _invalid(exc: InvalidInput) -> Response:
        errors = [e.to_dict() for e in exc.errors]
        return problem(exc.status, exc.title, str(exc), errors=errors)

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound) -> Response:
        extra: dict[str, Any] = {"resource": exc.resource}
        if exc.field:
            extra["errors"] = [{"field": exc.field, "reason": str(exc)}]
        return problem(404, "Not found", str(exc), **extra)

    outages: dict[str, OutageLog] = {}

    @app.errorhandler(ServiceUnavailable)
    def _unavailable(exc: ServiceUnavailable) -> Response:
        # One log line when a dependency goes away (and one when it is back), not a traceback per request.
        outages.setdefault(exc.dependency, OutageLog(app.logger, exc.dependency)).failed(exc)
        response = problem(503, exc.title, str(exc), slug=f"{exc.dependency}-unavailable", dependency=exc.dependency)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.after_request
    def _recovered(response: Response) -> Response:
        if response.status_code < 500:
            for outage in outages.values():
                outage.succeeded()
        return response

    @app.errorhandler(TunerError)
    def _tuner_error(exc: TunerError) -> Response:
        return problem(exc.status, exc.title, str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        detail = exc.description or exc.name
        if status == 413:
            field = "file" if request.mimetype == "multipart/form-data" else "body"
            return problem(413, "Payload too large", detail, errors=[{"field": field, "reason": detail}])
        response = problem(status, exc.name, detail)
        for name, value in exc.get_headers():
            if name == "Allow":  # a 405 says which methods the resource does take (RFC 9110)
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error on %s", request.path)
        return problem(500, "Internal error", "the server failed to handle this request; see its log")
