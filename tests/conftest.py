"""Shared fixtures: real databases (SQLite files, a fresh PostgreSQL database per test), real Redis,
and real worker processes. Nothing of the service is mocked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.worker_template import Template
from tuner_service.config import Settings, load_settings
from tuner_service.store import Store, StudyRecord

POSTGRES_ADMIN_URL = os.environ.get("TUNER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_TEST_URL = os.environ.get("TUNER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked slow run first (in their collected order): pytest-xdist hands each process its next test
    as it frees up, so a long test started last would leave the other processes idle while it finishes."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The embedded default (SQLite database and broker) under a temporary TUNER_HOME."""
    return load_settings({"TUNER_HOME": str(tmp_path / "home"), "TUNER_HEARTBEAT_TIMEOUT": "30"})


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite database file brought to the schema's head by the shipped migrations, once per test process.
    Running the migrations takes a tenth of a second, and several hundred tests start from a fresh store."""
    path = tmp_path_factory.mktemp("schema") / "head.sqlite"
    store = Store(f"sqlite:///{path}")
    store.upgrade()
    store.dispose()  # the last connection's close checkpoints the WAL into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture
def store(settings: Settings, migrated_sqlite: Path) -> Iterator[Store]:
    """The embedded default's database, migrated: a copy of :func:`migrated_sqlite` at the settings' path, or, where
    something (a service a fixture started first) made the database already, that one brought to the head."""
    target = Path(make_url(settings.database_url).database or "")
    fresh = not target.exists()
    if fresh:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_sqlite, target)
    store = Store(settings.database_url)
    if not fresh:
        store.upgrade()
    yield store
    store.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test, dropped afterwards."""
    import psycopg

    name = f"tuner_test_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {admin}: {exc}")
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys (and only those) are deleted afterwards."""
    import redis

    prefix = f"tuner-test-{uuid.uuid4().hex[:12]}:"
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL}: {exc}")
    yield prefix
    delete_redis_keys(prefix)
    client.close()


def delete_redis_keys(prefix: str) -> int:
    """Delete every key under ``prefix`` (a test's own broker state) on the test Redis."""
    import redis

    with redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=5) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        return client.delete(*keys) if keys else 0


@pytest.fixture
def redis_url(redis_prefix: str) -> str:
    """The shared test Redis; pair it with ``redis_prefix`` (``TUNER_BROKER_KEY_PREFIX``)."""
    return REDIS_TEST_URL


class Workers:
    """Real Celery worker processes started for a test, with their logs kept for failures."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, count: int = 1, *, prefix: str = "w") -> list[subprocess.Popen]:
        from tuner_service.launcher import worker_command, worker_envs

        started = []
        for env in worker_envs(self.settings, None, count):
            name = f"{prefix}{len(self.procs)}"
            env["TUNER_WORKER_ID"] = name
            command, log_path = worker_command(name, loglevel="INFO"), self.log_dir / f"{name}.log"
            if Template.usable_for(env):  # forked from a process that imported TensorFlow already
                proc = Template.spawn(command, env, log_path)
            else:
                log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
                proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            self.procs.append(proc)
            started.append(proc)
        return started

    def logs(self, tail: int | None = 4000) -> str:
        """Each worker's log, the last ``tail`` characters of it (all with None)."""
        return "\n".join(f"--- {p.name}\n{p.read_text()[-(tail or 0) :]}" for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        from tuner_service.launcher import stop_processes

        stop_processes(self.procs)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[Settings], Workers]]:
    made: list[Workers] = []

    def make(settings: Settings) -> Workers:
        log_dir = tmp_path / f"worker-logs-{len(made)}"
        log_dir.mkdir()
        made.append(Workers(settings, log_dir))
        return made[-1]

    yield make
    for group in made:
        group.stop()


def slot_of(worker: str | None) -> str | None:
    """The launcher's slot in a worker's name (``host:pid:slot``): what a test named the process."""
    return worker.rsplit(":", 1)[-1] if worker else worker


def wait_for_study(
    store: Store, study_id: int, *, timeout_s: float = 240.0, logs: Callable[[], str] | None = None
) -> StudyRecord:
    """Poll until the study is completed, cancelled or failed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        study = store.get_study(study_id)
        if study.is_terminal:
            return study
        time.sleep(0.5)
    counts = store.trial_counts(study_id)
    raise AssertionError(f"study {study_id} not finished after {timeout_s} s: {counts}\n{logs() if logs else ''}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout_s: float = 60.0) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or listening but still booting
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


@contextmanager
def running_up(settings: Settings, log_path: Path, workers: int = 1) -> Iterator[str]:
    """`tuner-service up` as a real process on a free port; yields its base URL once /healthz answers."""
    from tuner_service.launcher import settings_env, stop_processes

    port = free_port()
    env = {**os.environ, **settings_env(settings)}
    with open(log_path, "wb") as log:
        command = [sys.executable, "-m", "tuner_service.cli", "up", "--port", str(port), "--workers", str(workers)]
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/healthz")
            yield base
        finally:
            stop_processes([proc])


def make_token(store: Store, user: str, *, team: str = "alpha", role: str = "member", **team_options: object) -> str:
    """A real API token for a new user of ``team`` (created if needed) with ``role``."""
    import contextlib

    from tuner_service.errors import Conflict

    with contextlib.suppress(Conflict):
        store.create_team(team, **team_options)  # type: ignore[arg-type]
    store.create_user(user, team, role)
    token, _ = store.create_token(user)
    return token.secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def digits_study(**overrides: object) -> dict:
    """A small digits study in the classic space (cheap enough for tests)."""
    doc: dict = {
        "name": "digits-test",
        "dataset": "builtin:digits",
        "task": {"type": "multiclass"},
        "objective": {"name": "val_accuracy", "direction": "max"},
        "search_space": {
            "hidden_layers": {"type": "int", "min": 0, "max": 2},
            "neurons": {"type": "int", "min": 16, "max": 64, "sampling": "log"},
            "learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2, "sampling": "log"},
            "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
            "momentum": {
                "type": "float",
                "min": 0.0,
                "max": 0.9,
                "condition": {"parent": "optimizer", "values": ["sgd"]},
            },
            "batch_size": {"type": "choice", "values": [32, 64]},
        },
        "algorithm": "random",
        "max_trials": 4,
        "seed": 1,
        "early_stopping": {"patience": 1, "max_epochs": 3},
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    """A Redis server of this test's own (free port, no persistence), which the test may kill and restart."""
    from tests.servers import PrivateRedis

    server = PrivateRedis(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def private_postgres() -> Iterator[Any]:
    """A PostgreSQL cluster of this test's own (initdb in tmp_path), which the test may stop and start."""
    from tests.servers import PrivatePostgres

    if not (PrivatePostgres.available()):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    server = PrivatePostgres().init()
    yield server
    server.remove()
