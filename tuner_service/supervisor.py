"""Keep one worker process per slot: restart a process that exits by itself, stop them all gracefully.

A worker exits by itself when it recycles (``TUNER_MAX_TRIALS_PER_PROCESS``/``TUNER_MAX_MEMORY_MB``) or
crashes; its slot gets a fresh process. A slot whose process keeps dying right after it starts is given up
(three failed starts in a row), so a broken configuration does not spin forever.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
RECYCLED = 75  # the exit status of a worker that recycled itself (workers.lifecycle.RECYCLE_EXIT_CODE)
MIN_UPTIME_S = 10.0
MAX_FAILED_STARTS = 3


@dataclass(frozen=True)
class WorkerSpec:
    """How to start the process of one slot."""

    slot: str
    command: list[str]
    env: dict[str, str]
    log_path: Path | None = None  # the process's output goes here (appended) instead of the launcher's


@dataclass
class _Slot:
    spec: WorkerSpec
    proc: subprocess.Popen | None = None
    started: float = 0.0
    failed_starts: int = 0
    restarts: int = 0


@dataclass
class Supervisor:
    """The worker processes of one launcher (``tuner-service worker`` or ``up``)."""

    specs: list[WorkerSpec]
    stop_timeout_s: float = 90.0
    stdout: IO[bytes] | None = None
    _slots: list[_Slot] = field(default_factory=list)
    _stopping: bool = False
    # poll() may run in a thread of its own (`tuner-service up`): a process that exits because stop() sent it
    # SIGTERM must not be restarted, so both take this lock.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Supervisor:
        self._slots = [_Slot(spec) for spec in self.specs]
        for slot in self._slots:
            self._launch(slot)
        return self

    def _launch(self, slot: _Slot) -> None:
        if slot.spec.log_path is None:
            slot.proc = subprocess.Popen(slot.spec.command, env=slot.spec.env, stdout=self.stdout, stderr=self.stdout)
        else:
            with open(slot.spec.log_path, "ab") as log:
                slot.proc = subprocess.Popen(slot.spec.command, env=slot.spec.env, stdout=log, stderr=subprocess.STDOUT)
        slot.started = time.monotonic()

    @property
    def procs(self) -> list[subprocess.Popen]:
        return [slot.proc for slot in self._slots if slot.proc is not None]

    def poll(self) -> None:
        """Restart the processes that exited since the last call (not while stopping)."""
        with self._lock:
            if not self._stopping:
                self._restart_exited()

    def _restart_exited(self) -> None:
        for slot in self._slots:
            if slot.proc is None or (code := slot.proc.poll()) is None:
                continue
            quick = time.monotonic() - slot.started < MIN_UPTIME_S
            slot.failed_starts = slot.failed_starts + 1 if quick and code not in (0, RECYCLED) else 0
            if slot.failed_starts >= MAX_FAILED_STARTS:
                log.error(
                    "worker %s failed %d starts in a row (exit %s); giving up", slot.spec.slot, slot.failed_starts, code
                )
                slot.proc = None
                continue
            log.warning("worker %s exited (%s); starting a fresh process", slot.spec.slot, _describe(code))
            slot.restarts += 1
            self._launch(slot)

    def healthy(self) -> bool:
        """False once a slot has been given up."""
        return all(slot.proc is not None for slot in self._slots)

    def restarts(self) -> int:
        return sum(slot.restarts for slot in self._slots)

    def stop(self) -> None:
        """SIGTERM every worker (each hands its trial back at the next epoch end), SIGKILL after the timeout."""
        with self._lock:
            self._stopping = True
        procs = self.procs
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _describe(code: int) -> str:
    if code == RECYCLED:
        return "recycled"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit status {code}"
