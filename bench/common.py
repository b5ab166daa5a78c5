"""Helpers shared by the benchmarks: machine description, temporary databases, statistics, tables."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")

_DISTRIBUTIONS = {
    "TensorFlow": ("tensorflow-cpu", "tensorflow"),
    "Keras": ("keras",),
    "keras-tuner": ("keras-tuner",),
    "Celery": ("celery",),
    "kombu": ("kombu",),
    "SQLAlchemy": ("sqlalchemy",),
}


def _version(names: Sequence[str]) -> str:
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
    return "not installed"


def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model and the versions that matter, without importing TensorFlow."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024**2, 1)
                break
    return {
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "cpu_model": model,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {label: _version(names) for label, names in _DISTRIBUTIONS.items()},
    }


# -- services -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def temporary_postgres() -> Iterator[str]:
    """A fresh PostgreSQL database ``bench_<random>``, dropped afterwards (like tests/conftest.py)."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    """A key prefix of the benchmark's own on the shared Redis (``TUNER_BROKER_KEY_PREFIX``); its keys,
    and only those, are deleted afterwards."""
    import redis

    prefix = f"tuner-bench-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5) as client:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> float | None:
    """Signal one process we started and wait for it; returns seconds until it exited (None if killed)."""
    if proc.poll() is not None:
        return 0.0
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
        return time.monotonic() - start
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def wait_until(predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()


class ForeignCpu:
    """CPU time used by processes other than this one and its waited-for children, between start and stop.

    On a small shared machine this says how much the measurement was disturbed (database servers a
    benchmark talks to count as other processes too).
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        t = os.times()
        return busy, t.user + t.system + t.children_user + t.children_system, time.monotonic()

    def stop(self) -> dict[str, float]:
        busy, own, now = self._sample()
        foreign = max(0.0, (busy - self._start[0]) - (own - self._start[1]))
        wall = now - self._start[2]
        return {"foreign_cpu_s": foreign, "wall_s": wall, "foreign_share": foreign / (wall * (os.cpu_count() or 1))}


# -- statistics and formatting ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), like numpy's default."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


def fmt_s(seconds: float | None, digits: int = 2) -> str:
    """Seconds for a table: milliseconds below one second."""
    if seconds is None:
        return "–"
    if abs(seconds) < 1.0:
        return f"{seconds * 1000:.{max(0, digits - 1)}f} ms"
    return f"{seconds:.{digits}f} s"


def fmt_x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
