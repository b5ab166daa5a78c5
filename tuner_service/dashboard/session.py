"""Signing in to the dashboard with an API token, and the guard in front of every page.

The token is checked once with ``Store.authenticate``; the session cookie (signed, HttpOnly, SameSite=Lax,
Secure with TUNER_SECURE_COOKIES) then keeps only the token's SHA-256 digest and the user's session
version, both checked again on every request, so revoking or expiring the token, or signing out (which
raises the version), ends the session at its next click, whoever holds a copy of the cookie. Every POST
carries a per-session CSRF token in a hidden form field, compared in constant time before the view runs.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import unquote, urlsplit

from flask import Response, abort, current_app, g, jsonify, redirect, render_template, request, session, url_for

from tuner_service.accounts import Principal, token_digest
from tuner_service.api import services
from tuner_service.api.security import record_failure, throttled
from tuner_service.dashboard.blueprint import bp

SESSION_DIGEST = "token_digest"
SESSION_VERSION = "session_version"
SESSION_CSRF = "csrf"
CSRF_FIELD = "csrf_token"
PUBLIC_ENDPOINTS = frozenset({"dashboard.signin", "dashboard.asset", "dashboard.plotly"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def caller() -> Principal:
    return g.principal


def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    token = session.get(SESSION_CSRF)
    if not token:
        token = session[SESSION_CSRF] = secrets.token_urlsafe(32)
    return token


@bp.context_processor
def _template_globals() -> dict[str, object]:
    return {"csrf_token": csrf_token, "CSRF_FIELD": CSRF_FIELD, "principal": g.get("principal")}


def _check_csrf() -> None:
    sent = request.form.get(CSRF_FIELD, "")
    expected = session.get(SESSION_CSRF, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(400, "The form's security token is missing or out of date. Reload the page and submit it again.")


def safe_next(target: str | None) -> str:
    """Only a relative path on this site, never another host after signing in: ``//evil``, ``/\\evil``
    and ``/%09/evil`` are refused because browsers drop tabs and newlines and read backslashes as slashes,
    turning each into ``//evil``; control characters could also split the Location header."""
    if not target or len(target) > 2048 or not _is_local_path(target) or not _is_local_path(unquote(target)):
        return url_for("dashboard.studies")
    return target


def _is_local_path(target: str) -> bool:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target) or "\\" in target:
        return False
    if not target.startswith("/") or target.startswith("//"):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


@bp.before_request
def _guard() -> Response | None:
    if request.method not in SAFE_METHODS:
        _check_csrf()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    digest = session.get(SESSION_DIGEST)
    principal = services().store.authenticate_digest(digest) if digest else None
    if principal is not None and session.get(SESSION_VERSION) != principal.session_version:
        principal = None  # signed out since, maybe from another copy of this cookie
    if principal is None:
        session.pop(SESSION_DIGEST, None)
        target = request.full_path.rstrip("?") if request.method in SAFE_METHODS else request.referrer
        signin = url_for("dashboard.signin", next=safe_next(_local_path(target)))
        if request.path.endswith(".json"):
            return jsonify({"status": 401, "title": "Signed out", "signin": signin}), 401  # type: ignore[return-value]
        return redirect(signin)
    g.principal = principal
    return None


def _local_path(url: str | None) -> str | None:
    """The path of ``url`` when it is this site's (the Referer of a POST), else None."""
    if not url:
        return None
    if url.startswith("/"):
        return url
    root = request.host_url.rstrip("/")
    return url[len(root) :] if url.startswith(root + "/") else None


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Response | str | tuple[str, int]:
    """Sign in with an API token (``tuner-service token create``, or ``$TUNER_HOME/admin-token``)."""
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("dashboard/signin.html", next=target, error=None)
    secret = request.form.get("token", "").strip()
    if secret and throttled(current_app, services().settings):
        error = "Too many failed tokens from your address; wait a minute and try again."
        return render_template("dashboard/signin.html", next=target, error=error), 429
    principal = services().store.authenticate(secret) if secret else None
    if principal is None:
        if secret:
            record_failure(current_app, "dashboard sign-in")
        error = "Enter your API token." if not secret else "This token is unknown, revoked or expired."
        return render_template("dashboard/signin.html", next=target, error=error), 401
    session.clear()  # a fresh session (and CSRF token) for the new identity
    session[SESSION_DIGEST] = token_digest(secret)
    session[SESSION_VERSION] = principal.session_version
    session[SESSION_CSRF] = secrets.token_urlsafe(32)
    return redirect(target)


@bp.route("/signout", methods=["GET", "POST"])
def signout() -> Response | str:
    """GET asks for confirmation; the POST (with its CSRF token) ends the session on the server too: the
    user's session version goes up, so this cookie (and any copy of it) no longer signs anyone in."""
    if request.method == "GET":
        return render_template("dashboard/signout.html")
    services().store.end_sessions(caller().user_id)
    session.clear()
    return redirect(url_for("dashboard.signin"))
