"""Worker processes' plumbing without training: slot names and GPU shares, recycling limits, the stop request
and its grace period, the supervisor that restarts exited workers, and database outages seen as such."""

from __future__ import annotations

import logging
import sys
import threading
import time

import pytest

from tests.conftest import free_port
from tuner_service import shutdown
from tuner_service.config import load_settings
from tuner_service.errors import DatabaseUnavailable
from tuner_service.launcher import worker_envs
from tuner_service.outage import wait_out
from tuner_service.store import Store
from tuner_service.supervisor import RECYCLED, Supervisor, WorkerSpec
from workers.lifecycle import RECYCLE_EXIT_CODE, recycle_reason


def test_k_processes_per_gpu_get_distinct_slots_and_a_memory_share_each(tmp_path) -> None:
    settings = load_settings({"TUNER_HOME": str(tmp_path)})
    envs = worker_envs(settings, ["0", "1"], processes=1, per_gpu=2)
    assert [e["TUNER_WORKER_ID"] for e in envs] == ["gpu0.0", "gpu0.1", "gpu1.0", "gpu1.1"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "0", "1", "1"]
    # Each grows on demand up to its cap: 1/K of the usable memory, the whole of it for the GPU's first process
    # (the one that runs trials of several slots).
    assert [e["TUNER_GPU_MEMORY_FRACTION"] for e in envs] == ["0.900", "0.450", "0.900", "0.450"]
    assert [e["XLA_PYTHON_CLIENT_MEM_FRACTION"] for e in envs] == ["0.900", "0.450", "0.900", "0.450"]
    assert all(e["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and e["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for e in envs)
    assert [(e["TUNER_PER_GPU"], e["TUNER_GPU_PROCESS"]) for e in envs] == [("2", "0"), ("2", "1")] * 2
    processes = [load_settings(e) for e in envs]
    assert [(p.per_gpu, p.gpu_process) for p in processes] == [(2, 0), (2, 1)] * 2
    alone = worker_envs(settings, ["3"], processes=1)
    assert alone[0]["TUNER_WORKER_ID"] == "gpu3" and alone[0]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert "TUNER_GPU_MEMORY_FRACTION" not in alone[0] and alone[0]["TUNER_PER_GPU"] == "1"
    cpu = worker_envs(settings, None, processes=3)
    assert [e["TUNER_WORKER_ID"] for e in cpu] == ["cpu0", "cpu1", "cpu2"] and {e["TUNER_POOL"] for e in cpu} == {"cpu"}


def test_a_worker_recycles_after_its_trial_limit_or_above_its_memory_ceiling(tmp_path) -> None:
    settings = load_settings(
        {"TUNER_HOME": str(tmp_path), "TUNER_MAX_TRIALS_PER_PROCESS": "50", "TUNER_MAX_MEMORY_MB": "2048"}
    )
    assert recycle_reason(settings, 49, 1000.0) is None
    assert "50 trials" in (recycle_reason(settings, 50, 1000.0) or "")
    assert "2049 MB" in (recycle_reason(settings, 3, 2049.0) or "")
    assert recycle_reason(load_settings({"TUNER_HOME": str(tmp_path)}), 10_000, 1e6) is None  # 0: never
    assert "2 GPU slots" in (recycle_reason(load_settings({"TUNER_HOME": str(tmp_path)}), 1, 10.0, gpu_slots=2) or "")
    assert RECYCLE_EXIT_CODE == RECYCLED


def test_the_grace_period_interrupts_a_trial_whose_epoch_does_not_end() -> None:
    outcome: list[str] = []

    def train_forever() -> None:
        try:
            with shutdown.training():
                while True:
                    time.sleep(0.01)  # an epoch that never ends
        except shutdown.GraceExpired:
            outcome.append("interrupted")

    shutdown.reset()
    thread = threading.Thread(target=train_forever)
    thread.start()
    try:
        time.sleep(0.1)
        assert not shutdown.requested()
        shutdown.request(0.3)
        assert shutdown.requested()
        thread.join(timeout=10)
        assert outcome == ["interrupted"]
    finally:
        shutdown.reset()


def test_a_stop_between_trials_interrupts_nothing() -> None:
    shutdown.reset()
    try:
        shutdown.request(0.05)
        time.sleep(0.2)  # no trial is training: the grace period has nothing to interrupt
        assert shutdown.requested()
        with shutdown.training():
            pass  # a trial started after the request gets the whole grace period and finishes first
    finally:
        shutdown.reset()
    assert not shutdown.requested()


def test_the_supervisor_restarts_recycled_workers_and_gives_up_on_crash_loops() -> None:
    recycle = WorkerSpec("cpu0", [sys.executable, "-c", f"import sys; sys.exit({RECYCLED})"], {})
    crash = WorkerSpec("cpu1", [sys.executable, "-c", "import sys; sys.exit(3)"], {})
    supervisor = Supervisor([recycle, crash], stop_timeout_s=5).start()
    try:
        deadline = time.monotonic() + 30
        while supervisor.healthy() and time.monotonic() < deadline:
            supervisor.poll()
            time.sleep(0.05)
        assert not supervisor.healthy(), "a slot that fails every start is given up"
        assert supervisor.restarts() >= 3
    finally:
        supervisor.stop()
    sleeper = Supervisor([WorkerSpec("cpu0", [sys.executable, "-c", "import time; time.sleep(60)"], {})]).start()
    started = time.monotonic()
    sleeper.stop()
    assert sleeper.procs[0].returncode is not None and time.monotonic() - started < 30


def test_an_unreachable_database_is_reported_as_unavailable_and_waited_out(caplog) -> None:
    store = Store(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    with pytest.raises(DatabaseUnavailable):
        store.list_datasets(limit=1)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise DatabaseUnavailable("the database does not answer: connection refused")
        return "stored"

    with caplog.at_level(logging.WARNING, logger="tuner_service.outage"):
        assert wait_out(flaky, what="a test", max_wait_s=30) == "stored"
    assert len(calls) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, "one line when the outage starts, one when it ends"
    assert "unavailable" in messages[0] and "back after" in messages[1]
    store.dispose()
