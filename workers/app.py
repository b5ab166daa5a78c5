"""The Celery application and the one way to enqueue trial work.

Importing this module is cheap (no TensorFlow): the API imports it to send messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from celery import Celery

from tuner_service.config import Settings, load_settings
from tuner_service.errors import BrokerUnavailable

RUN_TRIAL = "tuner.run_trial"
RUN_JOB = "tuner.run_job"
REAP = "tuner.reap"


def pool_queue(pool: str) -> str:
    """The Celery queue of a resource pool: GPU workers consume ``trials.gpu``, CPU workers ``trials.cpu``."""
    return f"trials.{pool}"


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings.broker_url``; Redis for teams, an embedded SQLite broker by default."""
    transport_options: dict[str, object] = {}
    if settings.broker_url.startswith(("sqla+", "sqlalchemy+")):
        from workers import embedded

        settings.home.mkdir(parents=True, exist_ok=True)
        embedded.install(settings.broker_polling_interval_s)
    else:
        transport_options["polling_interval"] = settings.broker_polling_interval_s
    app = Celery("tuner_service", broker=settings.broker_url, include=["workers.tasks"])
    if not settings.is_embedded_broker:
        # A trial may train for hours; Redis must not hand its unacked message to another worker meanwhile.
        transport_options["visibility_timeout"] = 12 * 3600
        if settings.broker_key_prefix:
            transport_options["global_keyprefix"] = settings.broker_key_prefix
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=pool_queue("cpu"),
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # A publish to a broker that is away fails within about two seconds (the API answers 202 or 503 then)
        # instead of blocking the request; workers keep reconnecting on their own, forever.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        broker_connection_timeout=2,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule={
            "reap": {
                "task": REAP,
                "schedule": max(5.0, settings.heartbeat_timeout_s / 2),
                "options": {"queue": pool_queue("cpu")},
            }
        },
    )
    return app


@lru_cache(maxsize=4)
def celery_for(settings: Settings) -> Celery:
    return make_celery(settings)


def enqueue_trials(app: Celery, pool: str, count: int = 1, *, countdown: float | None = None) -> list[str]:
    """Wake ``count`` workers of ``pool``; each message carries a fresh ticket (its idempotency key).

    A message does not name a study: the worker that takes it asks the queue which study to serve, so
    priorities, fair share and quotas are decided at claim time.
    """
    tickets = []
    for _ in range(count):
        ticket = uuid.uuid4().hex
        app.send_task(RUN_TRIAL, args=[pool, ticket], queue=pool_queue(pool), countdown=countdown)
        tickets.append(ticket)
    return tickets


def waiting_messages(app: Celery, pool: str) -> int | None:
    """How many messages wait on the pool's queue (not yet delivered to a worker); None if the broker
    cannot say. The reaper wakes only what this does not already cover."""
    try:
        with app.connection_for_read() as connection:
            # Declaring is idempotent (what a worker does at start); a passive declare of a queue with no
            # message fails on Redis, where an empty queue has no key.
            return connection.default_channel.queue_declare(queue=pool_queue(pool)).message_count
    except Exception:  # noqa: BLE001 - the broker cannot say: the reaper wakes as if nothing waited
        return None


def reap_through(app: Celery, store: Any, settings: Settings) -> Any:
    """One reaper pass (:func:`tuner_service.reaper.reap`) that sends through ``app``'s broker."""
    from tuner_service.reaper import reap

    return reap(
        store,
        settings,
        lambda pool, n: enqueue_trials(app, pool, n),
        lambda pool, job_id: enqueue_job(app, pool, job_id),
        lambda pool: waiting_messages(app, pool),
    )


app = celery_for(load_settings())


@contextmanager
def sending() -> Iterator[None]:
    """Turn the broker's connection errors (Redis down, refused, timed out) into :class:`BrokerUnavailable`."""
    from kombu.exceptions import OperationalError

    try:
        yield
    except (OperationalError, ConnectionError, TimeoutError, OSError) as exc:
        raise BrokerUnavailable(f"the broker does not answer: {exc}") from exc


def broker_ping(app: Celery, timeout_s: float = 2.0) -> None:
    """Raise :class:`BrokerUnavailable` unless a connection to the broker can be made within ``timeout_s``."""
    with sending(), app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)


def enqueue_job(app: Celery, pool: str, job_id: int) -> None:
    """Send a job (range test, rerun) to a worker of its pool; the job row makes a redelivery harmless."""
    app.send_task(RUN_JOB, args=[job_id], queue=pool_queue(pool))
