"""The broker benchmark's own Celery app: one task that records when it was sent and when it started.

Worker: ``BENCH_BROKER_KIND=sqla|filesystem BENCH_BROKER_ROOT=DIR celery -A bench.broker_app worker --pool solo -c 1``.
Producer (a separate process that enqueues and exits): ``python -m bench.broker_app COUNT RESULTS_FILE TAG``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from celery import Celery

KINDS = ("sqla", "filesystem")
POLLING_INTERVAL_S = 0.2  # the project's TUNER_BROKER_POLLING_INTERVAL default, for both transports
TASK = "bench.record"


def broker_config(kind: str, root: Path, *, create: bool = True) -> tuple[str, dict[str, Any]]:
    """Broker URL and transport options for one transport whose state lives under ``root`` (made if ``create``)."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    if kind == "sqla":
        from workers import embedded  # the project's embedded default: kombu's SQLAlchemy transport, faster polls

        embedded.install(POLLING_INTERVAL_S)
        return f"sqla+sqlite:///{root / 'broker.sqlite'}", {}
    if kind == "filesystem":
        folders = {name: root / name for name in ("queue", "processed", "control")}
        for folder in folders.values():
            if create:
                folder.mkdir(exist_ok=True)
        return "filesystem://", {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "store_processed": False,
            # kombu's defaults are a 1 s poll and ./control relative to each process's working directory.
            "control_folder": str(folders["control"]),
            "polling_interval": POLLING_INTERVAL_S,
        }
    raise ValueError(f"unknown broker kind {kind!r}; one of {KINDS}")


def make_app(kind: str, root: Path, *, create: bool = True) -> Celery:
    url, options = broker_config(kind, root, create=create)
    app = Celery("bench_broker", broker=url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
    )
    return app


def append_line(path: str, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# The worker and producer processes name their broker in the environment; a mere import (the benchmark's
# own process) makes no folder.
app = make_app(
    os.environ.get("BENCH_BROKER_KIND", "sqla"),
    Path(os.environ.get("BENCH_BROKER_ROOT") or Path(tempfile.gettempdir()) / "bench-broker"),
    create="BENCH_BROKER_ROOT" in os.environ,
)


@app.task(name=TASK, acks_late=True, reject_on_worker_lost=True)
def record(path: str, sent: float, tag: str = "", sleep_s: float = 0.0) -> None:
    """Append (sent_time, start_time, pid) as a JSON line; optionally sleep, then append an end line."""
    append_line(path, {"tag": tag, "phase": "start", "sent": sent, "start": time.time(), "pid": os.getpid()})
    if sleep_s > 0:
        time.sleep(sleep_s)
        append_line(path, {"tag": tag, "phase": "end", "sent": sent, "start": time.time(), "pid": os.getpid()})


def send(celery: Celery, path: Path, tag: str, sleep_s: float = 0.0) -> None:
    celery.send_task(TASK, args=[str(path), time.time(), tag, sleep_s])


def main(argv: list[str]) -> int:
    count, path, prefix = int(argv[0]), Path(argv[1]), argv[2]
    for i in range(count):
        send(app, path, f"{prefix}{i}")
    app.pool.force_close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
