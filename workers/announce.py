"""A worker announces the hypermodels it can run, per pool, when it starts, and stays marked live while it runs.

The API validates studies against these announcements; the worker only claims trials of studies whose
hypermodel it offers, so a pool may mix workers with different packages installed.
"""

from __future__ import annotations

import logging
import threading

from celery import signals

log = logging.getLogger(__name__)

_offered: frozenset[str] | None = None  # None until announced: claim anything (the built-in MLP path)
_stop = threading.Event()


def offered_names() -> frozenset[str] | None:
    """The hypermodels this worker process announced (None before it has)."""
    return _offered


def announce() -> frozenset[str]:
    """Record every hypermodel this worker can run (building each once) and start the live-mark thread."""
    global _offered
    from tuner_service.hypermodels.runtime import offers  # imports Keras: workers only
    from workers.tasks import runtime, worker_name

    settings, store = runtime()
    found = offers(settings.hypermodels, cache_dir=settings.cache_dir)
    worker = worker_name(settings)
    store.announce_hypermodels(worker, settings.worker_pool, [offer.to_json() for offer in found])
    for offer in found:
        if offer.error:
            log.warning("hypermodel %s (%s) is not offered: %s", offer.entry.name, offer.entry.target, offer.error)
    _offered = frozenset(o.entry.name for o in found if o.error is None)
    log.info("worker %s offers hypermodels %s to pool %s", worker, sorted(_offered), settings.worker_pool)
    thread = threading.Thread(target=_keep_live, args=(worker, settings.announce_every_s), daemon=True)
    thread.start()
    return _offered


def _keep_live(worker: str, every_s: float) -> None:
    from workers.tasks import runtime

    _settings, store = runtime()
    while not _stop.wait(every_s):
        try:
            store.worker_seen(worker)
        except Exception:  # a database hiccup must not end the thread; the next beat retries
            log.exception("could not mark worker %s live", worker)


@signals.worker_ready.connect
def _on_ready(**_kwargs: object) -> None:
    try:
        announce()
    except Exception:  # the worker still runs MLP studies without a registry entry
        log.exception("announcing hypermodels failed")


@signals.worker_shutdown.connect
def _on_shutdown(**_kwargs: object) -> None:
    if _offered is None:
        return
    _stop.set()
    from workers.tasks import runtime, worker_name

    settings, store = runtime()
    try:
        store.worker_seen(worker_name(settings), stopped=True)
    except Exception:
        log.exception("could not mark the worker stopped")
