"""Embedded broker candidates: kombu's SQLAlchemy transport on SQLite (the project's default, through
``workers.embedded``) against kombu's filesystem transport, with a real Celery worker process.

Per transport, in one chain of worker processes on a fresh broker:

(b) a producer process enqueues tasks with no worker running and exits; then a worker starts: how many run;
(a) enqueue→start latency on that idle worker, tasks sent 0.3 s apart (plus its idle CPU use);
(d) the worker is stopped with SIGTERM while a task runs and 5 more are queued; a new worker starts: do all run;
(c) a task that sleeps 3 s starts, its worker is SIGKILLed after 1 s, a new worker starts: is it redelivered?

The baseline is the SQLAlchemy transport; ratios are filesystem / sqla.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, fmt_s, fmt_x, md_table, mean, percentile, ratio, stop_process, wait_until

NAME = "broker_transports"
TITLE = "Embedded broker: kombu SQLAlchemy (SQLite) vs filesystem transport"
BASELINE = "sqla"
LABELS = {
    "sqla": "SQLAlchemy on SQLite (`sqla+sqlite://`, current default)",
    "filesystem": "filesystem (`filesystem://`)",
}


def _params(quick: bool) -> dict[str, Any]:
    return {
        "latency_tasks": 10 if quick else 30,
        "send_interval_s": 0.3,
        "producer_tasks": 3 if quick else 10,
        "queued_at_sigterm": 2 if quick else 5,
        "busy_task_s": 1.0 if quick else 2.0,
        "victim_task_s": 3.0,
        "kill_after_s": 1.0,
        "redelivery_window_s": 3.0 if quick else 15.0,
        "idle_cpu_window_s": 1.0 if quick else 5.0,
        "polling_interval_s": 0.2,
    }


class Worker:
    """``celery -A bench.broker_app worker --pool solo -c 1`` with its log in a file."""

    def __init__(self, kind: str, root: Path, name: str) -> None:
        self.log_path = root / f"{name}.log"
        env = {
            **os.environ,
            "BENCH_BROKER_KIND": kind,
            "BENCH_BROKER_ROOT": str(root),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        cmd = [
            sys.executable, "-m", "celery", "-A", "bench.broker_app", "worker", "--pool", "solo", "-c", "1",
            "-n", f"{name}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        self.started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Seconds from spawn to Celery's "ready." line."""
        if not wait_until(lambda: " ready." in self.log() or self.proc.poll() is not None, timeout_s):
            raise RuntimeError(f"worker not ready after {timeout_s} s:\n{self.log()[-3000:]}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        return time.monotonic() - self.started

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _starts(path: Path, prefix: str) -> list[dict[str, Any]]:
    return [r for r in _records(path) if r["phase"] == "start" and r["tag"].startswith(prefix)]


def _distinct(records: list[dict[str, Any]]) -> int:
    return len({r["tag"] for r in records})


def _broker_rows(root: Path) -> dict[str, int] | None:
    """Rows left in the SQLAlchemy transport's table: delivered messages stay there with visible = 0."""
    path = root / "broker.sqlite"
    if not path.exists():
        return None
    with sqlite3.connect(path) as conn:
        total, visible = conn.execute("SELECT COUNT(*), COALESCE(SUM(visible), 0) FROM kombu_message").fetchone()
    return {"rows": int(total), "visible": int(visible)}


def _queue_files(root: Path) -> int | None:
    folder = root / "queue"
    return len([p for p in folder.iterdir() if p.suffix == ".msg"]) if folder.exists() else None


def run_transport(kind: str, root: Path, p: dict[str, Any]) -> dict[str, Any]:
    from bench import broker_app

    out: dict[str, Any] = {"kind": kind, "ready_s": []}
    results = root / "results.jsonl"
    celery = broker_app.make_app(kind, root)
    workers: list[Worker] = []

    def start_worker() -> Worker:
        worker = Worker(kind, root, f"w{len(workers)}")
        workers.append(worker)
        out["ready_s"].append(worker.wait_ready())
        return worker

    try:
        # (b) survival across a producer restart: enqueue from a process that exits before any worker exists.
        env = {**os.environ, "BENCH_BROKER_KIND": kind, "BENCH_BROKER_ROOT": str(root)}
        n = p["producer_tasks"]
        producer = subprocess.run(
            [sys.executable, "-m", "bench.broker_app", str(n), str(results), "b"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if producer.returncode != 0:
            raise RuntimeError(f"producer failed:\n{producer.stderr[-3000:]}")
        w1 = start_worker()
        wait_until(lambda: _distinct(_starts(results, "b")) >= n, 20.0)
        ran = _starts(results, "b")
        out["producer_restart"] = {"sent": n, "ran": _distinct(ran), "deliveries": len(ran)}

        # idle CPU of a worker that polls an empty queue
        before, t0 = w1.cpu_seconds(), time.monotonic()
        time.sleep(p["idle_cpu_window_s"])
        out["idle_cpu_percent"] = 100.0 * (w1.cpu_seconds() - before) / (time.monotonic() - t0)

        # (a) enqueue→start latency on an idle worker
        broker_app.send(celery, results, "warmup")
        wait_until(lambda: _starts(results, "warmup"), 10.0)
        for i in range(p["latency_tasks"]):
            broker_app.send(celery, results, f"a{i}")
            time.sleep(p["send_interval_s"])
        wait_until(lambda: _distinct(_starts(results, "a")) >= p["latency_tasks"], 15.0)
        latencies = [r["start"] - r["sent"] for r in _starts(results, "a")]
        out["latency"] = {
            "sent": p["latency_tasks"],
            "ran": len(latencies),
            "p50_s": percentile(latencies, 50),
            "p95_s": percentile(latencies, 95),
            "max_s": max(latencies, default=None),
            "mean_s": mean(latencies),
            "samples_s": latencies,
        }

        # (d) graceful stop (SIGTERM) while one task runs and more are queued; then a new worker
        broker_app.send(celery, results, "d-busy", sleep_s=p["busy_task_s"])
        wait_until(lambda: _starts(results, "d-busy"), 10.0)
        q = p["queued_at_sigterm"]
        for i in range(q):
            broker_app.send(celery, results, f"dq{i}")
        time.sleep(0.3)
        stop_s = stop_process(w1.proc, signal.SIGTERM, timeout=30.0)
        before_restart = _distinct(_starts(results, "dq"))
        start_worker()
        wait_until(lambda: _distinct(_starts(results, "dq")) >= q, 15.0)
        ran = _starts(results, "dq")
        busy = [r for r in _records(results) if r["tag"] == "d-busy"]
        out["graceful_restart"] = {
            "queued": q,
            "ran_before_stop": before_restart,
            "ran": _distinct(ran),
            "deliveries": len(ran),
            "running_task_finished": any(r["phase"] == "end" for r in busy),
            "running_task_deliveries": sum(r["phase"] == "start" for r in busy),
            "stop_s": stop_s,
        }

        # (c) SIGKILL a worker 1 s into a 3 s task; a new worker starts: is the message delivered again?
        w2 = workers[-1]
        broker_app.send(celery, results, "c-victim", sleep_s=p["victim_task_s"])
        wait_until(lambda: _starts(results, "c-victim"), 10.0)
        first = _starts(results, "c-victim")
        time.sleep(p["kill_after_s"])
        w2.proc.send_signal(signal.SIGKILL)
        w2.proc.wait()
        killed_at = time.time()
        start_worker()
        wait_until(lambda: len(_starts(results, "c-victim")) >= 2, p["redelivery_window_s"])
        victim = _starts(results, "c-victim")
        out["killed_worker"] = {
            "started": len(first) == 1,
            "redelivered": len(victim) >= 2,
            "redelivered_after_s": (victim[1]["start"] - killed_at) if len(victim) >= 2 else None,
            "window_s": p["redelivery_window_s"],
            "finished": any(r["tag"] == "c-victim" and r["phase"] == "end" for r in _records(results)),
        }
    finally:
        for worker in workers:
            stop_process(worker.proc, signal.SIGTERM, timeout=30.0)
        celery.pool.force_close_all()
    out["broker_rows_after"] = _broker_rows(root)
    out["queue_files_after"] = _queue_files(root)
    out["worker_logs_tail"] = {w.log_path.name: w.log()[-1500:] for w in workers if w.proc.returncode not in (0, -9)}
    return out


def run(quick: bool) -> dict[str, Any]:
    params = _params(quick)
    transports = {}
    for kind in ("sqla", "filesystem"):
        with tempfile.TemporaryDirectory(prefix=f"bench-broker-{kind}-") as tmp:
            transports[kind] = run_transport(kind, Path(tmp), params)
    base = transports[BASELINE]["latency"]
    for data in transports.values():
        lat = data["latency"]
        data["latency"]["p50_ratio"] = ratio(lat["p50_s"], base["p50_s"])
        data["latency"]["p95_ratio"] = ratio(lat["p95_s"], base["p95_s"])
    return {"params": params, "baseline": BASELINE, "transports": transports}


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def markdown(result: dict[str, Any]) -> str:
    p, t = result["params"], result["transports"]
    kinds = [k for k in ("sqla", "filesystem") if k in t]

    def row(label: str, fn: Any) -> list[str]:
        return [label, *(fn(t[k]) for k in kinds)]

    rows = [
        row(f"(a) enqueue→start p50 ({p['latency_tasks']} tasks, {p['send_interval_s']} s apart)",
            lambda d: f"{fmt_s(d['latency']['p50_s'])} ({fmt_x(d['latency']['p50_ratio'])})"),
        row("(a) enqueue→start p95", lambda d: f"{fmt_s(d['latency']['p95_s'])} ({fmt_x(d['latency']['p95_ratio'])})"),
        row("(a) enqueue→start max", lambda d: fmt_s(d["latency"]["max_s"])),
        row("(a) tasks run", lambda d: f"{d['latency']['ran']} / {d['latency']['sent']}"),
        row("(b) producer restart: tasks run (deliveries)",
            lambda d: f"{d['producer_restart']['ran']} / {d['producer_restart']['sent']} "
            f"({d['producer_restart']['deliveries']})"),
        row(f"(c) SIGKILLed worker: message redelivered within {p['redelivery_window_s']:g} s",
            lambda d: _yes_no(d["killed_worker"]["redelivered"])
            + (f" (after {fmt_s(d['killed_worker']['redelivered_after_s'])})" if d["killed_worker"]["redelivered"]
               else "")),
        row("(d) SIGTERM with a running task: it finished first",
            lambda d: _yes_no(d["graceful_restart"]["running_task_finished"])),
        row("(d) queued tasks the stopping worker still ran after SIGTERM",
            lambda d: f"{d['graceful_restart']['ran_before_stop']} "
            f"(the worker exited {fmt_s(d['graceful_restart']['stop_s'])} after SIGTERM)"),
        row("(d) queued tasks run in all, old + new worker (deliveries)",
            lambda d: f"{d['graceful_restart']['ran']} / {d['graceful_restart']['queued']} "
            f"({d['graceful_restart']['deliveries']})"),
        row("worker spawn → ready (median of 3)", lambda d: fmt_s(percentile(d["ready_s"], 50))),
        row(f"idle worker CPU (empty queue, {p['idle_cpu_window_s']:g} s)", lambda d: f"{d['idle_cpu_percent']:.1f} %"),
        row("broker state after the run",
            lambda d: f"{d['broker_rows_after']['rows']} rows kept in broker.sqlite, "
            f"{d['broker_rows_after']['visible']} visible"
            if d.get("broker_rows_after") else f"{d.get('queue_files_after')} message files left"),
    ]  # fmt: skip
    table = md_table(["measure", *(LABELS[k] for k in kinds)], rows)
    return "\n\n".join([_setup(p), table, _verdict(result)])


def _setup(p: dict[str, Any]) -> str:
    return (
        "A Celery app of the benchmark's own (`bench/broker_app.py`: one task that appends "
        "`(sent_time, start_time, pid)` as a JSON line) with `task_acks_late=True`, "
        "`task_reject_on_worker_lost=True`, prefetch multiplier 1, and real worker processes "
        "(`celery -A bench.broker_app worker --pool solo -c 1 --without-gossip --without-mingle`). "
        f"Both transports poll every {p['polling_interval_s']:g} s: the SQLAlchemy transport through "
        "`workers.embedded` (its class attribute), the filesystem transport through the `polling_interval` "
        "transport option (kombu's default is 1 s). The filesystem transport's options are "
        '`{"data_folder_in": d, "data_folder_out": d, "processed_folder": p, "store_processed": False}` plus '
        "`control_folder` (kombu's default is `./control`, relative to each process's working directory) and "
        "`polling_interval`. Per transport one chain on a fresh broker: (b) → (a) on the same worker → (d) → (c). "
        "Ratios in brackets are against the SQLAlchemy transport measured in the same run."
    )


def _short(kind: str) -> str:
    return {"sqla": "SQLAlchemy", "filesystem": "filesystem"}[kind]


def _verdict(result: dict[str, Any]) -> str:
    t, poll = result["transports"], result["params"]["polling_interval_s"]
    sqla, fs = t["sqla"], t["filesystem"]
    lost = [_short(k) for k in ("sqla", "filesystem") if not t[k]["killed_worker"]["redelivered"]]

    def kept(d: dict[str, Any]) -> str:
        return f"{d['producer_restart']['ran']}/{d['producer_restart']['sent']}"

    def restarted(d: dict[str, Any]) -> str:
        return f"{d['graceful_restart']['ran']}/{d['graceful_restart']['queued']}"

    poll_bound = all(t[k]["latency"]["p95_s"] is not None and t[k]["latency"]["p95_s"] < poll + 0.1 for k in t)
    measured = (
        f"Measured: enqueue→start p50 {fmt_s(sqla['latency']['p50_s'])} (SQLAlchemy) vs "
        f"{fmt_s(fs['latency']['p50_s'])} (filesystem), {fmt_x(fs['latency']['p50_ratio'])}"
        + (
            f"; both p95 stay under the {poll:g} s poll interval + 0.1 s, so the poll, not the transport, sets it. "
            if poll_bound
            else ". "
        )
        + f"Producer restart: {kept(sqla)} vs {kept(fs)} ran. Graceful restart: {restarted(sqla)} vs "
        f"{restarted(fs)} ran. SIGKILLed worker: "
        + (f"the message was lost ({' and '.join(lost)})." if lost else "redelivered by both.")
    )
    extra = [t[k]["graceful_restart"]["ran_before_stop"] for k in ("sqla", "filesystem")]
    stopping = ""
    if any(extra):
        stopping = (
            f"After SIGTERM the workers finished their running task and then still took {extra[0]} (SQLAlchemy) "
            f"and {extra[1]} (filesystem) queued message(s) and ran them before exiting (row (d)): on these "
            "virtual transports a warm shutdown does not stop the consumer before the next message (a plain "
            "Celery worker on Redis, tried by hand with the same settings, exits right after its running task). "
            "In the service a worker that is stopping hands such a message back unrun (`workers/tasks.py`), and "
            "a trial it is training goes back to the queue at its next epoch end with a checkpoint, `pending` "
            "with its retries unchanged, for another worker to resume (`tuner_service/shutdown.py`)."
        )
    why = (
        "Why a killed worker's message is lost: both are kombu *virtual* transports, which hand a message "
        "out by taking it off the queue (the SQLAlchemy transport sets `visible = 0` on its row inside "
        "`BEGIN IMMEDIATE`; the filesystem transport moves the file out of the folder and deletes it) and keep "
        "the unacknowledged copy only in the worker's memory. A graceful stop puts it back; `SIGKILL`, the OOM "
        "killer or a power loss does not, whatever `task_acks_late` and `task_reject_on_worker_lost` say, and "
        "neither transport has Redis' visibility timeout. The service does not depend on the broker for this: "
        "the reaper requeues a trial from the database once its heartbeat is stale and re-enqueues studies "
        "that owe trials but have no message (`TUNER_HEARTBEAT_TIMEOUT`, `TUNER_WAKE_AFTER`)."
    )
    differences = (
        "Differences that do matter: (1) the SQLAlchemy transport never deletes a delivered message, it only "
        "marks it invisible, so `broker.sqlite` grows by one row per message for good (last table row); the "
        "filesystem transport deletes each file. (2) Hand-out is atomic on SQLite (`BEGIN IMMEDIATE`, then "
        "`visible = 0`), so two local workers cannot take the same message; the filesystem transport with "
        "`store_processed: False` `shutil.move`s the file into the system temporary directory (the "
        "`processed_folder` option is then unused), which is a rename only when that directory is on the same "
        "file system (otherwise copy-then-delete, which two workers can both complete), and it orders messages "
        "by a `time.monotonic()` millisecond file-name prefix, which restarts at boot. (3) The filesystem "
        "transport needs four folder options (its defaults are relative to each process's working directory) "
        "and a `polling_interval` option; the SQLAlchemy transport needs one URL, but it passes its transport "
        "options to `create_engine`, which is why the project sets its poll interval as a class attribute in "
        "`workers.embedded`."
    )
    same_durability = kept(sqla) == kept(fs) and restarted(sqla) == restarted(fs) and len(lost) in (0, 2)
    sqla_ok = (
        sqla["producer_restart"]["ran"] == sqla["producer_restart"]["sent"]
        and sqla["graceful_restart"]["ran"] == sqla["graceful_restart"]["queued"]
    )
    ratio_p50 = fs["latency"]["p50_ratio"]
    comparable = ratio_p50 is not None and 0.5 <= ratio_p50 <= 2.0
    if same_durability and sqla_ok and comparable:
        advice = (
            "**Recommendation: keep the SQLAlchemy transport on SQLite as the embedded default.** In this run it "
            "was as fast (within 2× at p50, both set by the poll interval), kept every message across a producer "
            "restart and a graceful worker restart just as the filesystem transport did, and lost a SIGKILLed "
            "worker's message just as the filesystem transport did (the reaper recovers that trial from the "
            "database). What tips it: each message is handed out atomically to one worker, and it is one file "
            "behind one URL. Its cost is the message table that only grows; a periodic "
            "`DELETE FROM kombu_message WHERE visible = 0` (for instance in the reaper) would bound it."
        )
    else:
        advice = (
            "**Recommendation: none drawn automatically** — this run does not match the expected picture "
            f"(same durability: {same_durability}; SQLAlchemy kept everything: {sqla_ok}; p50 within 2×: "
            f"{comparable}). Read the table and the worker logs in the raw result before choosing."
        )
    parts = ["**Which is the better embedded default.**", measured, stopping, why, differences, advice]
    return "\n\n".join(p for p in parts if p)
