"""What every response of the app carries and how failed tokens are throttled.

The dashboard's security headers (CSP, nosniff, frame denial, referrer policy, no-store) go on API answers
too, the HTML docs page included; with ``TUNER_SECURE_COOKIES`` cookies are ``Secure`` and HSTS is sent.
Failed bearer tokens are counted per client address in a one-minute window (in Redis when the broker is
Redis, so every API replica shares the count; in process memory in the embedded mode) and logged; past
``TUNER_AUTH_FAILURES_PER_MINUTE`` the address is answered 429 until the window ends.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from flask import Flask, Response, request

from tuner_service.config import Settings

log = logging.getLogger("tuner_service.auth")
WINDOW_S = 60
HSTS = "max-age=31536000; includeSubDomains"
# Everything the pages load comes from the app itself. Plotly injects its own <style> elements, and its
# WebGL traces (the parallel-coordinates plot) compile their draw calls with regl, which needs 'unsafe-eval'.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def security_headers(response: Response) -> Response:
    """The headers every page and API answer carries (set only where a view has not set its own)."""
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"  # pages show one caller's data
    return response


class FailureCounter(Protocol):
    def add(self, address: str) -> int:
        """Count one failure for ``address``; the failures in its current window."""

    def count(self, address: str) -> int:
        """The failures of ``address`` in its current window."""


class MemoryCounter:
    """Per-process counts for the embedded mode (one API process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def _key(self, address: str) -> tuple[str, int]:
        return address, int(time.time() // WINDOW_S)

    def add(self, address: str) -> int:
        key = self._key(address)
        with self._lock:
            if len(self._counts) > 10_000:  # forget old windows rather than grow without end
                current = key[1]
                self._counts = {k: v for k, v in self._counts.items() if k[1] == current}
            self._counts[key] = self._counts.get(key, 0) + 1
            return self._counts[key]

    def count(self, address: str) -> int:
        with self._lock:
            return self._counts.get(self._key(address), 0)


class RedisCounter:
    """Counts shared by every API replica of a team deployment, under the broker's key prefix.

    With Redis away, each replica counts on its own meanwhile: an outage of the broker must neither open
    the door to guessing tokens nor turn every request into a 500.
    """

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._errors = (redis.RedisError, OSError)
        self._prefix = f"{prefix}tuner:auth-failures:"
        self._local = MemoryCounter()

    def _key(self, address: str) -> str:
        return f"{self._prefix}{address}:{int(time.time() // WINDOW_S)}"

    def add(self, address: str) -> int:
        key = self._key(address)
        local = self._local.add(address)
        try:
            with self._redis.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, WINDOW_S * 2)
                count, _ = pipe.execute()
        except self._errors as exc:
            log.warning("failed-token counts are per process while Redis does not answer (%s)", exc)
            return local
        return int(count)

    def count(self, address: str) -> int:
        try:
            return int(self._redis.get(self._key(address)) or 0)
        except self._errors:
            return self._local.count(address)


def failure_counter(settings: Settings) -> FailureCounter:
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisCounter(settings.broker_url, settings.broker_key_prefix)
    return MemoryCounter()


def client_address() -> str:
    # Behind a proxy, run the app under werkzeug's ProxyFix so that remote_addr is the client's.
    return request.remote_addr or "unknown"


def install(app: Flask, settings: Settings) -> None:
    app.config["SESSION_COOKIE_SECURE"] = settings.secure_cookies
    app.extensions["tuner_auth_failures"] = failure_counter(settings)

    @app.after_request
    def _headers(response: Response) -> Response:  # dashboard pages and API answers alike
        security_headers(response)
        if settings.secure_cookies:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response


def throttled(app: Flask, settings: Settings) -> bool:
    """Whether this client has already sent too many bad tokens in this window."""
    counter: FailureCounter = app.extensions["tuner_auth_failures"]
    return counter.count(client_address()) >= settings.auth_failures_per_minute


def record_failure(app: Flask, reason: str) -> None:
    counter: FailureCounter = app.extensions["tuner_auth_failures"]
    address = client_address()
    count = counter.add(address)
    log.warning("failed API token from %s on %s %s (%s; %d this minute)", address, request.method, request.path,
                reason, count)  # fmt: skip
