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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from werkzeug.serving import BaseWSGIServer, make_server

from tuner_service.config import Settings
from tuner_service.store import Store

if TYPE_CHECKING:
    from tuner_service.supervisor import Supervisor


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
        "TUNER_CACHE_DIR": str(settings.cache_dir or ""),
        "TUNER_SHUTDOWN_GRACE": str(settings.shutdown_grace_s),
        "TUNER_MAX_TRIALS_PER_PROCESS": str(settings.max_trials_per_process),
        "TUNER_MAX_MEMORY_MB": str(settings.max_memory_mb),
        "TUNER_PROPOSAL_DELAY": str(settings.proposal_delay_s),
    }


def worker_command(name: str, queue: str = "trials.cpu", loglevel: str = "WARNING") -> list[str]:
    """One Celery worker process that runs one trial at a time (solo pool: Keras in the main thread).

    The node name carries the launcher's process id, so two launchers on one host never share a name.
    """
    quiet = ["--quiet"] if loglevel == "WARNING" else []
    return [
        sys.executable, "-m", "celery", "-A", "workers.app", *quiet, "worker",
        "--pool", "solo", "--concurrency", "1", "-Q", queue, "-n", f"{name}-{os.getpid()}@%h",
        "--loglevel", loglevel, "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def worker_envs(settings: Settings, gpus: list[str] | None, processes: int, per_gpu: int = 1) -> list[dict[str, str]]:
    """One environment per worker process: ``per_gpu`` processes pinned to each GPU (pool ``gpu``), or CPU-only
    ones (pool ``cpu``). ``TUNER_WORKER_ID`` is the slot (``cpu0``, ``gpu1.0``); the worker adds its host and
    process id to make its name unique. K processes on a GPU share its K slots (``TUNER_PER_GPU``); each is
    capped at 1/K of its memory except the first (``TUNER_GPU_PROCESS`` 0), capped at the whole GPU, which
    alone starts trials of several slots (:mod:`tuner_service.gpu_slots`)."""
    base = {**os.environ, **settings_env(settings), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    if gpus:
        k = max(1, per_gpu)
        return [
            {
                **base,
                **gpu_memory_env(k, process),
                "CUDA_VISIBLE_DEVICES": gpu,
                "TUNER_WORKER_ID": f"gpu{gpu}.{process}" if k > 1 else f"gpu{gpu}",
                "TUNER_POOL": "gpu",
                "TUNER_PER_GPU": str(k),
                "TUNER_GPU_PROCESS": str(process),
            }
            for gpu in gpus
            for process in range(k)
        ]
    return [
        {**base, "CUDA_VISIBLE_DEVICES": "", "TUNER_WORKER_ID": f"cpu{i}", "TUNER_POOL": "cpu"}
        for i in range(processes)
    ]


GPU_MEMORY_USABLE = 0.9  # of a GPU's memory: the rest is left for the CUDA context of each process


def gpu_memory_env(per_gpu: int, process: int) -> dict[str, str]:
    """How one of ``per_gpu`` processes on a GPU holds its memory.

    Alone on its GPU a process grows into it. Sharing it, every process grows on demand up to a cap, so that
    an idle one holds only its CUDA context and what its trials grew into: 1/K of the usable memory each, the
    whole of it for the first process (which alone runs trials of several slots). TensorFlow reads
    ``TF_FORCE_GPU_ALLOW_GROWTH`` in its GPU allocator, whose size is the logical device's memory limit
    (``workers.lifecycle.limit_gpu_memory``); JAX grows when not preallocating, up to its memory fraction;
    PyTorch's caching allocator grows by itself, up to its per-process fraction.
    """
    if per_gpu <= 1:
        return {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    cap = f"{GPU_MEMORY_USABLE if process == 0 else GPU_MEMORY_USABLE / per_gpu:.3f}"
    return {
        "TUNER_GPU_MEMORY_FRACTION": cap,
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": cap,
    }


def start_workers(
    settings: Settings,
    gpus: list[str] | None = None,
    processes: int = 1,
    *,
    per_gpu: int = 1,
    loglevel: str = "WARNING",
    log_dir: Path | None = None,
) -> Supervisor:
    """Start the worker processes under a :class:`Supervisor` that restarts recycled or crashed ones. With
    ``log_dir`` their output (TensorFlow's start-up lines, Celery's warnings, tracebacks) goes to
    ``log_dir/worker-<id>.log`` instead of the terminal, where it would break into progress bars."""
    from tuner_service.supervisor import Supervisor, WorkerSpec

    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    specs = [
        WorkerSpec(
            env["TUNER_WORKER_ID"],
            worker_command(env["TUNER_WORKER_ID"], pool_queue_name(env["TUNER_POOL"]), loglevel),
            env,
            log_path=None if log_dir is None else worker_log_path(log_dir, env["TUNER_WORKER_ID"]),
        )
        for env in worker_envs(settings, gpus, processes, per_gpu)
    ]
    return Supervisor(specs, stop_timeout_s=settings.shutdown_grace_s + 30).start()


def worker_log_path(log_dir: Path, worker_id: str) -> Path:
    return log_dir / f"worker-{worker_id}.log"


def pool_queue_name(pool: str) -> str:
    from workers.app import pool_queue

    return pool_queue(pool)


def ensure_admin_token(
    store: Store,
    settings: Settings,
    *,
    team: str = "local",
    user: str = "admin",
    label: str = "local admin (tuner-service up)",
) -> str:
    """The admin token: made on first start (team ``local``, user ``admin`` unless named) and kept in
    ``$TUNER_HOME/admin-token`` with mode 0600, where the CLI finds it. Idempotent: a token already there
    that still authenticates is kept (``tuner-service up`` and ``tuner-service admin bootstrap``)."""
    from tuner_service.accounts import admin_token_path
    from tuner_service.errors import Conflict

    path = admin_token_path(settings.home)
    if path.exists():
        secret = path.read_text().strip()
        if store.authenticate(secret) is not None:
            return secret
    # A second start finds the team and user already there: that is fine.
    with contextlib.suppress(Conflict):
        store.create_team(team)
    with contextlib.suppress(Conflict):
        store.create_user(user, team, "admin")
    token, _ = store.create_token(user, label=label)
    settings.home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token.secret + "\n")
    os.chmod(path, 0o600)
    return token.secret


def stop_processes(procs: list[subprocess.Popen], timeout: float = 90.0) -> None:
    """SIGTERM, then SIGKILL whatever still runs after ``timeout`` (a worker hands its trial back at the next
    epoch end or within its grace period, ``TUNER_SHUTDOWN_GRACE``: keep ``timeout`` above that)."""
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
    log_dir: Path | None = None
    _server: BaseWSGIServer | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _supervisor: Supervisor | None = None
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
            self._supervisor = start_workers(self.settings, self.gpus, self.workers, log_dir=self.log_dir)
            self._spawn(self._supervise, "supervisor")
        return self

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            assert self._supervisor is not None
            self._supervisor.poll()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _reap_loop(self) -> None:
        from workers.app import celery_for, reap_through

        celery = celery_for(self.settings)
        while not self._stop.wait(self.reap_every_s):
            try:
                reap_through(celery, self._store, self.settings)
                if self.settings.broker_url.startswith("sqla+"):
                    from workers.embedded import purge_delivered

                    purge_delivered(self.settings.broker_url)
            except Exception as exc:  # keep reaping; say what went wrong
                print(f"reaper: {exc}", file=sys.stderr)

    def workers_alive(self) -> bool:
        return self._supervisor is None or self._supervisor.healthy()

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.stop()
        if self._server is not None:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=15)
        self._store.dispose()

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
