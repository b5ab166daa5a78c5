"""Riding out a database outage in a worker: wait and retry instead of losing the trial in hand.

The store raises :class:`DatabaseUnavailable` when the server does not answer. A worker that has trained for
an hour should not throw that away because PostgreSQL restarted: it retries what it must write (the trial's
result, its hand-back) with a capped backoff, and logs one line when the outage starts and one when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from tuner_service.errors import DatabaseUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)


class OutageLog:
    """One log line when a dependency goes away and one when it is back, however many calls fail between."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log, self._what = logger, what
        self.down_since: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self._log.warning("%s unavailable: %s", self._what, str(exc).splitlines()[0] if str(exc) else exc)

    def succeeded(self) -> None:
        if self.down_since is not None:
            self._log.warning("%s back after %.1f s", self._what, time.monotonic() - self.down_since)
            self.down_since = None


def wait_out(fn: Callable[[], T], *, what: str, max_wait_s: float = 900.0) -> T:
    """Call ``fn`` until the database answers (at most ``max_wait_s``), then return its result."""
    outage = OutageLog(log, f"database ({what})")
    deadline = time.monotonic() + max_wait_s
    delay = 0.5
    while True:
        try:
            result = fn()
        except DatabaseUnavailable as exc:
            outage.failed(exc)
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        outage.succeeded()
        return result
