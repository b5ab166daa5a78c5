"""Graceful stop of a worker process: a trial is handed back at an epoch end instead of being killed.

When the worker is told to stop (SIGTERM/SIGINT), :func:`request` sets a process-wide flag that the training
callback reads at each epoch end: it saves a checkpoint there and the trial goes back to the queue at once,
as ``pending`` with its retries unchanged, for another worker to resume from that epoch. If no epoch ends
within the grace period, :class:`GraceExpired` is raised in the training thread and the trial is handed
back from its previous resume point (or the start). Nothing here imports Celery or Keras.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

_lock = threading.RLock()
_requested = threading.Event()
_timer: threading.Timer | None = None
_training: int | None = None  # the thread id of the trial being trained, if any
_grace_s = 0.0


class GraceExpired(BaseException):  # noqa: N818 - a signal-like interruption, not an error of the trial
    """Raised in the training thread when the stop grace period ends before an epoch did.

    A ``BaseException`` so that ``except Exception`` around training (which records failed trials) lets it
    through: the trial did not fail, its worker stopped.
    """


@dataclass(frozen=True)
class Handback:
    """A trial the worker did not finish: requeue it (``resume`` is its checkpoint's (execution, epoch), or
    ``None`` to keep the previous resume point), or leave it alone when another worker has taken it over."""

    reason: str
    resume: tuple[int, int] | None = None
    taken_over: bool = False


def request(grace_s: float) -> None:
    """Ask the running trial to stop at its next epoch end, and interrupt it if no epoch ends within
    ``grace_s`` (counted from now, or from when training starts if the worker is between trials)."""
    global _grace_s
    with _lock:
        if _requested.is_set():
            return  # a second signal does not restart the clock
        _grace_s = grace_s
        _requested.set()
        if _training is not None:
            _arm(_training)


def requested() -> bool:
    """Whether this process has been told to stop."""
    return _requested.is_set()


@contextmanager
def training() -> Iterator[None]:
    """Mark the calling thread as training a trial: only then can the grace period interrupt it."""
    global _training
    with _lock:
        _training = threading.get_ident()
        if _requested.is_set():
            _arm(_training)
    try:
        yield
    finally:
        with _lock:
            _training = None
            _disarm()


def reset() -> None:
    """Forget a stop request (tests, a process that goes on serving)."""
    with _lock:
        _disarm()
        _requested.clear()


def _arm(thread_id: int) -> None:
    global _timer
    if _timer is None and _grace_s > 0:
        _timer = threading.Timer(_grace_s, _interrupt, args=(thread_id,))
        _timer.daemon = True
        _timer.start()


def _disarm() -> None:
    global _timer
    if _timer is not None:
        _timer.cancel()
        _timer = None


def _interrupt(thread_id: int) -> None:
    # An asynchronous exception is delivered at the training thread's next Python bytecode, which in Keras'
    # fit loop comes after the current batch: the only way to end an epoch that will not end on its own.
    with _lock:
        if _training != thread_id:
            return
        log.warning("stop grace period over before an epoch ended: interrupting the trial")
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(GraceExpired))
