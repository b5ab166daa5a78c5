"""Bearer-token authentication for ``/api/v1`` and the two rules of authorization: a team sees only its
own objects (another team's answer 404, so ids reveal nothing), and viewers cannot write (403)."""

from __future__ import annotations

from flask import Flask, Response, g, request

from tuner_service.accounts import Principal
from tuner_service.api.problems import problem
from tuner_service.errors import TunerError

PROTECTED_PREFIX = "/api/v1"


class Forbidden(TunerError):
    """The caller is known but its role does not allow this."""

    status = 403
    title = "Forbidden"


def principal() -> Principal:
    return g.principal


def scope() -> int | None:
    """The team whose objects the caller may see; ``None`` for an admin (every team)."""
    return principal().scope


def require_write() -> Principal:
    caller = principal()
    if not caller.can_write:
        raise Forbidden(f"user {caller.user_name} is a viewer and cannot change anything")
    return caller


def require_admin() -> Principal:
    caller = principal()
    if not caller.is_admin:
        raise Forbidden(f"user {caller.user_name} is not an admin")
    return caller


def _signed_in_reader() -> Principal | None:
    """A dashboard session may read the API in the browser (its docs, its JSON). Only reads: a write by
    cookie would be open to cross-site request forgery, so writes always need a bearer token."""
    from flask import session

    from tuner_service.api import services

    if request.method not in ("GET", "HEAD") or not request.cookies:
        return None
    digest = session.get("token_digest")
    caller = services().store.authenticate_digest(digest) if isinstance(digest, str) else None
    if caller is None or session.get("session_version") != caller.session_version:
        return None  # signed out since (on any copy of this cookie)
    return caller


def _unauthorized(detail: str) -> Response:
    response = problem(401, "Unauthorized", detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="tuner-service"'
    return response


def install(app: Flask) -> None:
    from tuner_service.api import services
    from tuner_service.api.security import record_failure, throttled

    @app.before_request
    def _authenticate() -> Response | None:
        if not request.path.startswith(PROTECTED_PREFIX):
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            caller = _signed_in_reader()
            if caller is None:
                return _unauthorized("send an API token: Authorization: Bearer <token>")
            g.principal = caller
            return None
        settings = services().settings
        if throttled(app, settings):
            response = problem(429, "Too many requests", "too many failed tokens from this address; retry later")
            response.headers["Retry-After"] = "60"
            return response
        caller = services().store.authenticate(secret.strip())
        if caller is None:
            record_failure(app, "unknown, revoked or expired")
            return _unauthorized("the token is unknown, revoked or expired")
        g.principal = caller
        return None
