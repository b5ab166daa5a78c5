"""Start the tests' Celery worker processes by forking a process that has already imported TensorFlow.

Every worker process the integration tests start would otherwise pay the TensorFlow import (about 4.5 s of CPU
on 2 cores) before it takes a trial, and the suite starts some fifty of them. A template process, one per
pytest process, imports the heavy libraries once (TensorFlow, Keras, Keras Tuner, Celery, SQLAlchemy and the
database drivers, but nothing of this project, which reads its settings at import), then forks on request; it
exits when its pytest process does (its standard input closes). The forked child takes the worker's
environment and runs the very command line the tests would exec (``python -m celery -A workers.app worker
...``), so the worker is the real one; it only starts without the import. The launcher's own path
(``tuner-service worker``/``up``, compose) is exercised by the tests that run those commands.

The child is forked twice and orphaned while the pytest process is a child subreaper, so the pytest process
becomes its parent: :class:`ForkedProcess` waits for it and reads its exit status like ``subprocess.Popen``.

The template is used only for the Keras backend it imported (TensorFlow); a test that asks for another one
(``KERAS_BACKEND=jax``) gets an exec'd process.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PR_SET_CHILD_SUBREAPER = 36
# What the template imported under, and so what a worker it forks runs with.
TEMPLATE_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "KERAS_BACKEND": "tensorflow"}
HEAVY_MODULES = (
    "tensorflow", "keras", "keras_tuner", "numpy", "sklearn", "celery", "celery.bin.celery", "kombu",
    "sqlalchemy", "alembic", "psycopg", "redis", "flask", "werkzeug",
)  # fmt: skip


class ForkedProcess:
    """A forked worker, waited for like ``subprocess.Popen`` (the pytest process is its parent)."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: it is gone
                self.returncode = -signal.SIGKILL
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.02)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Template:
    """The template process of this pytest process, started on first use."""

    _lock = threading.Lock()
    _proc: subprocess.Popen | None = None

    @classmethod
    def usable_for(cls, env: dict[str, str]) -> bool:
        return all(env.get(key, value) == value for key, value in TEMPLATE_ENV.items())

    @classmethod
    def spawn(cls, args: list[str], env: dict[str, str], log: Path) -> ForkedProcess:
        """Fork a worker running ``args`` (``[python, -m, module, ...]``) with ``env``, its output to ``log``."""
        assert args[1] == "-m", args
        libc = ctypes.CDLL(None, use_errno=True)
        with cls._lock:
            proc = cls._started()
            # Orphans of this process become its children while the fork is handed over, and only then.
            if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed: the worker would not be ours")
            try:
                request = {"module": args[2], "argv": args[3:], "env": env, "log": str(log), "cwd": str(REPO)}
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                answer = proc.stdout.readline()
                if not answer:
                    raise RuntimeError("the worker template process died")
            finally:
                libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        return ForkedProcess(int(answer), args)

    @classmethod
    def _started(cls) -> subprocess.Popen:
        if cls._proc is None or cls._proc.poll() is not None:
            env = {**os.environ, **TEMPLATE_ENV, "PYTHONUNBUFFERED": "1"}
            cls._proc = subprocess.Popen(
                [sys.executable, __file__], env=env, cwd=REPO, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        return cls._proc


def _serve() -> None:
    """The template: import, then fork one worker per request line; answer each with the worker's pid."""
    import importlib

    for module in HEAVY_MODULES:
        importlib.import_module(module)
    for line in sys.stdin:
        request = json.loads(line)
        read_end, write_end = os.pipe()
        middle = os.fork()
        if middle == 0:  # the intermediate child: fork the worker, say its pid, exit to orphan it
            os.close(read_end)
            worker = os.fork()
            if worker == 0:
                os.close(write_end)
                _run_worker(request)
            os.write(write_end, str(worker).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            pid = pipe.read().decode()
        os.waitpid(middle, 0)
        sys.stdout.write(pid + "\n")
        sys.stdout.flush()


def _run_worker(request: dict) -> None:
    import runpy

    code = 1
    try:
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]
        # The process's own standard streams; closefd=False, as Celery replaces them and the objects it drops
        # must not close the descriptors (a later socket would take their numbers).
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.argv = [request["module"], *request["argv"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - a worker that failed to start says why in its log
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    _serve()
