"""Start the whole product on one machine: the API, worker processes and the reaper (``tuner-service up``)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from tuner_service.config import Settings
from tuner_service.reaper import reap
from tuner_service.store import Store


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process resolve exactly these settings."""
    return {
        "TUNER_HOME": str(settings.home),
        "TUNER_DATABASE_URL": settings.database_url,
        "TUNER_BROKER_URL": settings.broker_url,
        "TUNER_ARTIFACTS": str(settings.artifacts),
        "TUNER_HEARTBEAT_TIMEOUT": str(settings.heartbeat_timeout_s),
        "TUNER_MAX_TRIAL_RETRIES": str(settings.max_trial_retries),
        "TUNER_WAKE_AFTER": str(settings.wake_after_s),
        "TUNER_FAIR_SHARE_WINDOW": str(settings.fair_share_window_s),
        "TUNER_BROKER_POLLING_INTERVAL": str(settings.broker_polling_interval_s),
        "TUNER_BROKER_KEY_PREFIX": settings.broker_key_prefix,
        "TUNER_PROPOSAL_DELAY": str(settings.proposal_delay_s),
    }


def worker_command(name: str, queue: str = "trials.cpu", loglevel: str = "WARNING") -> list[str]:
    """One Celery worker process that runs one trial at a time (solo pool: Keras in the main thread)."""
    quiet = ["--quiet"] if loglevel == "WARNING" else []
    return [
        sys.executable, "-m", "celery", "-A", "workers.app", *quiet, "worker",
        "--pool", "solo", "--concurrency", "1", "-Q", queue, "-n", f"{name}@%h",
        "--loglevel", loglevel, "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def worker_envs(settings: Settings, gpus: list[str] | None, processes: int) -> list[dict[str, str]]:
    """One environment per worker process: pinned to one GPU each (pool ``gpu``), or CPU-only (pool ``cpu``)."""
    base = {**os.environ, **settings_env(settings), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    if gpus:
        return [
            {
                **base,
                "CUDA_VISIBLE_DEVICES": gpu,
                "TF_FORCE_GPU_ALLOW_GROWTH": "true",
                "TUNER_WORKER_ID": f"gpu{gpu}",
                "TUNER_POOL": "gpu",
            }
            for gpu in gpus
        ]
    return [
        {**base, "CUDA_VISIBLE_DEVICES": "", "TUNER_WORKER_ID": f"cpu{i}", "TUNER_POOL": "cpu"}
        for i in range(processes)
    ]


def start_workers(settings: Settings, gpus: list[str] | None = None, processes: int = 1) -> list[subprocess.Popen]:
    procs = []
    for env in worker_envs(settings, gpus, processes):
        queue = pool_queue_name(env["TUNER_POOL"])
        procs.append(subprocess.Popen(worker_command(env["TUNER_WORKER_ID"], queue), env=env))
    return procs


def pool_queue_name(pool: str) -> str:
    from workers.app import pool_queue

    return pool_queue(pool)


def ensure_admin_token(store: Store, settings: Settings) -> str:
    """The local admin token: made on first start (team ``local``, user ``admin``) and kept in
    ``$TUNER_HOME/admin-token`` with mode 0600, where the CLI finds it."""
    from tuner_service.accounts import admin_token_path
    from tuner_service.errors import Conflict

    path = admin_token_path(settings.home)
    if path.exists():
        secret = path.read_text().strip()
        if store.authenticate(secret) is not None:
            return secret
    # A second start finds the team and user already there: that is fine.
    with contextlib.suppress(Conflict):
        store.create_team("local")
    with contextlib.suppress(Conflict):
        store.create_user("admin", "local", "admin")
    token, _ = store.create_token("admin", label="local admin (tuner-service up)")
    settings.home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token.secret + "\n")
    os.chmod(path, 0o600)
    return token.secret


def stop_processes(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class LocalService:
    """The API on a local port, worker processes and a reaper thread, on one settings object."""

    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8750
    workers: int = 1
    gpus: list[str] | None = None
    reap_every_s: float = 10.0
    access_log: bool = True
    _server: BaseWSGIServer | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> LocalService:
        from tuner_service.api import create_app

        store = Store(self.settings.database_url)
        store.upgrade()
        self._store = store
        self.admin_token = ensure_admin_token(store, self.settings)
        app = create_app(self.settings, store=store)
        if not self.access_log:  # `tuner-service run` polls twice a second: one line per poll is noise
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = make_server(self.host, self.port, app, threaded=True)
        self._spawn(self._server.serve_forever, "api")
        self._spawn(self._reap_loop, "reaper")
        if self.workers or self.gpus:
            self._procs = start_workers(self.settings, self.gpus, self.workers)
        return self

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _reap_loop(self) -> None:
        from workers.app import celery_for, enqueue_job, enqueue_trials

        celery = celery_for(self.settings)
        while not self._stop.wait(self.reap_every_s):
            try:
                reap(
                    self._store,
                    self.settings,
                    lambda pool, n: enqueue_trials(celery, pool, n),
                    lambda pool, job_id: enqueue_job(celery, pool, job_id),
                )
                if self.settings.broker_url.startswith("sqla+"):
                    from workers.embedded import purge_delivered

                    purge_delivered(self.settings.broker_url)
            except Exception as exc:  # keep reaping; say what went wrong
                print(f"reaper: {exc}", file=sys.stderr)

    def workers_alive(self) -> bool:
        return all(p.poll() is None for p in self._procs)

    def stop(self) -> None:
        self._stop.set()
        stop_processes(self._procs)
        if self._server is not None:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=15)
        self._store.dispose()

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
