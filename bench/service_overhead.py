"""What the service costs on top of Keras Tuner: the same trials (2 hidden layers of 64, adam, lr 1e-3,
batch 64, digits, exactly 5 epochs each) run

(a) by Keras Tuner's own ``RandomSearch`` in one process (the baseline, ``bench/kt_baseline.py``);
(b) through the service on the embedded default (``LocalService``: SQLite database and broker, one worker
    process), the study submitted over HTTP with ``tuner_service.client.Client``;
(c) through the service on Redis + PostgreSQL with one worker process.

The overhead is split per trial from the database's timestamps, and ``Store.record_epoch`` is timed
directly (200 calls against each database).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    ForeignCpu,
    fmt_s,
    fmt_x,
    free_port,
    md_table,
    mean,
    percentile,
    ratio,
    temporary_postgres,
)

NAME = "service_overhead"
TITLE = "Service overhead against Keras Tuner in one process"
EPOCHS = 5
PATIENCE = 100
RECORD_EPOCH_CALLS = 200
FIXED_VALUES: dict[str, Any] = {
    "hidden_layers": 2,
    "neurons": 64,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 64,
}
MODES = {
    "kt": "(a) Keras Tuner RandomSearch, one process (baseline)",
    "fit": "(a′) plain `model.fit` loop, one process (lower bound)",
    "embedded": "(b) service, embedded default (SQLite + SQLite broker)",
    "redis_pg": "(c) service, Redis + PostgreSQL",
}


def study_doc(trials: int, name: str) -> dict[str, Any]:
    space: dict[str, Any] = {k: {"type": "fixed", "value": v} for k, v in FIXED_VALUES.items()}
    space["trial_seed"] = {"type": "int", "min": 0, "max": 1000}  # makes trials distinct; the builder ignores it
    return {
        "name": name,
        "dataset": "builtin:digits",
        "task": {"type": "multiclass"},
        "objective": {"name": "val_accuracy", "direction": "max"},
        "search_space": space,
        "algorithm": "random",
        "max_trials": trials,
        "parallelism": 1,
        "seed": 1,
        "early_stopping": {"patience": PATIENCE, "max_epochs": EPOCHS},
        "validation": {"fraction": 0.2, "seed": 0},
    }


def _child_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}


# -- (a) the baseline -----------------------------------------------------------------------------------


def run_in_process(trials: int, workdir: Path, mode: str) -> dict[str, Any]:
    """(a) or (a′) in a fresh process: ``bench/kt_baseline.py``."""
    import json

    out = workdir / f"{mode}.json"
    log = workdir / f"{mode}.log"
    (workdir / mode).mkdir()
    spawned = time.time()
    with open(log, "wb") as handle:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.kt_baseline", str(out), str(trials), str(workdir / mode), mode],
            env=_child_env(),
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"baseline {mode} failed:\n{log.read_text(errors='replace')[-3000:]}")
    raw = json.loads(out.read_text())
    timeline = [
        {"start": t["begin"], "end": t["end"], "epoch_ends": t["epoch_ends"], "status": "completed"}
        for t in raw["trials"]
    ]
    summary = summarize(timeline, origin=spawned)
    summary.update(
        {
            "trials_completed": sum(s == "COMPLETED" for s in raw["statuses"]),
            "best_score": raw["best_score"],
            "process_start_s": raw["process_start"] - spawned,
            "import_s": raw["imported"] - raw["imports_start"],
            "data_s": raw["data_ready"] - raw["imported"],
            "origin": "process spawn",
            "total_s": raw["search_end"] - spawned,
        }
    )
    return summary


# -- (b), (c) the service -------------------------------------------------------------------------------


def _ts(value: datetime | str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:  # SQLite hands back naive datetimes; the store writes UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def epoch_times(store: Any, trial_ids: list[int]) -> dict[int, list[float | None]]:
    """When each epoch row (execution 0) was written, per trial: the store's records leave ``created_at`` out."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from tuner_service.store.models import EpochRow

    query = (
        select(EpochRow.trial_id, EpochRow.created_at)
        .where(EpochRow.trial_id.in_(trial_ids), EpochRow.execution == 0)
        .order_by(EpochRow.trial_id, EpochRow.epoch)
    )
    times: dict[int, list[float | None]] = {tid: [] for tid in trial_ids}
    with Session(store.engine) as session:
        for trial_id, created_at in session.execute(query):
            times[trial_id].append(_ts(created_at))
    return times


def run_service(
    settings: Any, trials: int, name: str, *, doc: dict[str, Any] | None = None, ready: Any = None
) -> dict[str, Any]:
    """Run one study (``doc``, default: the fixed MLP) on a ``LocalService``; ``ready(client)`` is awaited first."""
    from tuner_service.client import Client
    from tuner_service.launcher import LocalService
    from tuner_service.store import Store

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per poll
    service = LocalService(settings, port=free_port(), workers=1)
    started = time.time()
    service.start()
    try:
        token = getattr(service, "admin_token", None)  # the API asks for a bearer token once accounts exist
        client = Client(service.url, token=token, timeout=30) if token else Client(service.url, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.health()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if ready is not None:
            ready(client)
        api_ready = time.time()
        submitted = time.time()
        study = client.submit_study(doc or study_doc(trials, name))
        final = client.wait(study["id"], poll_s=0.5, timeout_s=600)
        seen_done = time.time()
        if not service.workers_alive():
            raise RuntimeError("the worker process died")
    finally:
        service.stop()
    store = Store(settings.database_url)
    try:
        record = store.get_study(study["id"])
        rows = store.list_trials(record.id, sort="number", limit=1000).items
        rows = sorted(rows, key=lambda r: r.number)
        epochs = epoch_times(store, [r.id for r in rows])
        timeline = []
        for row in rows:
            timeline.append(
                {
                    "start": _ts(row.started_at),
                    "end": _ts(row.finished_at),
                    "epoch_ends": epochs[row.id],
                    "status": row.status,
                }
            )
        summary = summarize(timeline, origin=submitted)
        summary.update(
            {
                "status": final["status"],
                "error": record.error,
                "trials_completed": sum(t["status"] == "completed" for t in timeline),
                "best_score": record.best_score,
                "service_start_s": api_ready - started,
                "origin": "study submitted",
                "created_after_submit_s": _ts(record.created_at) - submitted,
                "total_s": (_ts(record.finished_at) or seen_done) - submitted,
                "seen_done_s": seen_done - submitted,
                "record_epoch": time_record_epoch(store, rows[0].id),
            }
        )
        return summary
    finally:
        store.dispose()


def time_record_epoch(store: Any, trial_id: int, calls: int = RECORD_EPOCH_CALLS) -> dict[str, Any]:
    """``Store.record_epoch`` timed directly: new epoch rows of an existing trial, as a worker writes them."""
    metrics = {"accuracy": 0.93, "loss": 0.21, "val_accuracy": 0.94, "val_loss": 0.19}
    for i in range(5):  # connections and statements warm, as in a worker after its first epoch
        store.record_epoch(trial_id, 1, i, metrics)
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        store.record_epoch(trial_id, 2, i, metrics)
        times.append(time.perf_counter() - t0)
    return {
        "calls": calls,
        "mean_s": mean(times),
        "p50_s": percentile(times, 50),
        "p95_s": percentile(times, 95),
    }


# -- the per-trial split ----------------------------------------------------------------------------------


def summarize(timeline: list[dict[str, Any]], origin: float) -> dict[str, Any]:
    """Per-trial phases from start/end/epoch-end timestamps (seconds since the epoch)."""
    gaps, trains, first_epoch, epoch_steps, after_last = [], [], [], [], []
    for i, t in enumerate(timeline):
        if i > 0:
            gaps.append(t["start"] - timeline[i - 1]["end"])
        trains.append(t["end"] - t["start"])
        ends = t["epoch_ends"]
        if ends:
            first_epoch.append(ends[0] - t["start"])
            after_last.append(t["end"] - ends[-1])
            epoch_steps += [b - a for a, b in zip(ends, ends[1:], strict=False)]
    steady = timeline[-1]["end"] - timeline[0]["start"] if timeline else None
    return {
        "trials": len(timeline),
        "startup_s": timeline[0]["start"] - origin if timeline else None,
        "steady_s": steady,
        "per_trial_s": steady / len(timeline) if steady else None,
        "gap_mean_s": mean(gaps),
        "gap_p50_s": percentile(gaps, 50),
        "gap_max_s": max(gaps, default=None),
        "train_mean_s": mean(trains),
        "train_p50_s": percentile(trains, 50),
        # medians: on a small shared machine single epochs vary by tens of percent
        "first_epoch_p50_s": percentile(first_epoch[1:] or first_epoch, 50),  # trial 1 also pays one-off set-up
        "epoch_step_p50_s": percentile(epoch_steps, 50),
        "after_last_epoch_p50_s": percentile(after_last, 50),
        "epochs_per_trial": mean([len(t["epoch_ends"]) for t in timeline]),
        "timeline": timeline,
    }


def bookkeeping(service: dict[str, Any], bare: dict[str, Any]) -> float:
    """Per-trial time the service spends on its own work, from directly measured parts only: the gap between
    trials (broker, claim), five ``record_epoch`` calls, and finishing beyond what the bare fit loop needs."""
    finish_extra = max(0.0, service["after_last_epoch_p50_s"] - bare["after_last_epoch_p50_s"])
    return service["gap_mean_s"] + EPOCHS * service["record_epoch"]["mean_s"] + finish_extra


# -- the benchmark --------------------------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    from bench.common import REDIS_URL, redis_prefix
    from tuner_service.config import load_settings

    trials = 2 if quick else 20  # the smoke run: every mode, two trials each
    modes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        root = Path(tmp)

        def measure(key: str, label: str, fn: Any, *args: Any) -> None:
            print(f"[bench]   {label}", flush=True)
            others = ForeignCpu()
            modes[key] = fn(*args)
            modes[key]["interference"] = others.stop()

        measure("kt", "(a) Keras Tuner in one process", run_in_process, trials, root, "kt")
        measure("fit", "(a') plain model.fit loop in one process", run_in_process, trials, root, "fit")
        embedded = load_settings({"TUNER_HOME": str(root / "embedded")})
        measure("embedded", "(b) service on the embedded default", run_service, embedded, trials, "bench-embedded")
        with temporary_postgres() as pg_url, redis_prefix() as prefix:
            team = load_settings(
                {
                    "TUNER_HOME": str(root / "team"),
                    "TUNER_DATABASE_URL": pg_url,
                    "TUNER_BROKER_URL": REDIS_URL,
                    "TUNER_BROKER_KEY_PREFIX": prefix,
                }
            )
            measure("redis_pg", "(c) service on Redis + PostgreSQL", run_service, team, trials, "bench-redis-pg")
    base = modes["kt"]
    for key in ("embedded", "redis_pg"):
        modes[key]["bookkeeping_s"] = bookkeeping(modes[key], modes["fit"])
    for data in modes.values():
        data["total_ratio"] = ratio(data["total_s"], base["total_s"])
        data["steady_ratio"] = ratio(data["steady_s"], base["steady_s"])
        data["per_trial_ratio"] = ratio(data["per_trial_s"], base["per_trial_s"])
    return {
        "trials": trials,
        "epochs": EPOCHS,
        "hyperparameters": FIXED_VALUES,
        "baseline": "kt",
        "modes": modes,
    }


def markdown(result: dict[str, Any]) -> str:
    modes = result["modes"]
    keys = [k for k in MODES if k in modes]
    n = result["trials"]

    def row(label: str, fn: Any) -> list[str]:
        return [label, *(fn(modes[k]) for k in keys)]

    def service_only(fn: Any) -> Any:
        return lambda d: fn(d) if "record_epoch" in d else "–"

    rec = {k: modes[k]["record_epoch"]["mean_s"] for k in keys if "record_epoch" in modes[k]}
    rows = [
        row("trials completed", lambda d: f"{d['trials_completed']} / {n}"),
        row("CPU used by other processes meanwhile (share of the machine; c: includes PostgreSQL and Redis)",
            lambda d: f"{d['interference']['foreign_cpu_s']:.1f} s ({100 * d['interference']['foreign_share']:.0f} %)"
            if "interference" in d else "–"),
        row("best val_accuracy", lambda d: f"{d['best_score']:.4f}" if d.get("best_score") is not None else "–"),
        row("**wall, cold** (a: process spawn → last trial; b, c: submit → study finished)",
            lambda d: f"**{fmt_s(d['total_s'])}** ({fmt_x(d['total_ratio'])})"),
        row("start-up (a: spawn → first trial; b, c: submit → first trial started_at)",
            lambda d: fmt_s(d["startup_s"])),
        row("  of which TensorFlow/Keras/keras-tuner import (measured in-process)",
            lambda d: fmt_s(d["import_s"]) if "import_s" in d else "–"),
        row("**wall, warm** (first trial start → last trial end)",
            lambda d: f"**{fmt_s(d['steady_s'])}** ({fmt_x(d['steady_ratio'])})"),
        row("**per trial** (warm wall / trials)",
            lambda d: f"**{fmt_s(d['per_trial_s'])}** ({fmt_x(d['per_trial_ratio'])})"),
        row("finish → next start (enqueue→start: broker, claim), mean (median)",
            lambda d: f"{fmt_s(d['gap_mean_s'])} ({fmt_s(d['gap_p50_s'])})"),
        row("finish → next start, max", lambda d: fmt_s(d["gap_max_s"])),
        row("training (start → finish), mean (median)",
            lambda d: f"{fmt_s(d['train_mean_s'])} ({fmt_s(d['train_p50_s'])})"),
        row("  start → epoch 1 reported (build, compile, trace, epoch 1), median of trials 2..n",
            lambda d: fmt_s(d["first_epoch_p50_s"])),
        row("  one further epoch (incl. its report), median", lambda d: fmt_s(d["epoch_step_p50_s"])),
        row("  last epoch → finish (a: checkpoint bookkeeping; b, c: save .keras + weights, report to the oracle),"
            " median", lambda d: fmt_s(d["after_last_epoch_p50_s"])),
        row(f"`store.record_epoch`, mean of {RECORD_EPOCH_CALLS} calls (p95)",
            service_only(lambda d: f"{fmt_s(d['record_epoch']['mean_s'])} ({fmt_s(d['record_epoch']['p95_s'])})")),
        row(f"epoch reporting per trial ({EPOCHS} × record_epoch), share of training",
            service_only(lambda d: f"{fmt_s(EPOCHS * d['record_epoch']['mean_s'])} "
                         f"({100 * EPOCHS * d['record_epoch']['mean_s'] / d['train_mean_s']:.1f} %)")),
        row("**service bookkeeping per trial** (gap + epoch reports + finish beyond the bare loop's), "
            "share of per trial",
            service_only(lambda d: f"**{fmt_s(d['bookkeeping_s'])}** "
                         f"({100 * d['bookkeeping_s'] / d['per_trial_s']:.1f} %)")),
    ]  # fmt: skip
    table = md_table(["per study of " + str(n) + " trials", *(MODES[k] for k in keys)], rows)
    return "\n\n".join([_setup(result), table, _reading(result, rec)])


def _setup(result: dict[str, Any]) -> str:
    hp = result["hyperparameters"]
    return (
        f"{result['trials']} trials of one fixed model ({hp['hidden_layers']} hidden layers of {hp['neurons']}, "
        f"{hp['optimizer']}, learning rate {hp['learning_rate']:g}, batch {hp['batch_size']}) on the built-in "
        f"`digits` set (validation fraction 0.2, seed 0), exactly {result['epochs']} epochs each "
        f"(`EarlyStopping` patience {PATIENCE}, restoring the best weights, max_epochs {result['epochs']}); "
        "models built by `tuner_service.hypermodel.build_model` in every column. "
        "**Baseline (a)**: Keras Tuner's own `RandomSearch` in one fresh process (`bench/kt_baseline.py`) over "
        "the same `Fixed` values plus one dummy `Int('trial_seed', 0, 1000)` that the model ignores, so it runs "
        f"{result['trials']} distinct trials (a space of only `Fixed` values has one point and RandomSearch would "
        "stop after it); it writes its usual trial directory and a best-weights checkpoint whenever the "
        "objective improves. "
        "**(b)** and **(c)**: `tuner_service.launcher.LocalService` with one worker process, the study "
        "(`fixed` parameters plus a dummy `int` `trial_seed` 0..1000, algorithm random, parallelism 1) submitted "
        "over HTTP with `tuner_service.client.Client`; (c) on a fresh PostgreSQL database and Redis db 12. "
        "The service's timings come from the database: trial `started_at`/`finished_at` and each epoch row's "
        "`created_at`; (a)'s from `on_trial_begin`/`on_trial_end` and an `on_epoch_end` callback. Ratios in "
        "brackets are against (a), measured in the same run. The worker imports TensorFlow when its first "
        "message arrives, so that import is part of (b)'s and (c)'s start-up."
    )


def _signed(seconds: float) -> str:
    return ("+" if seconds >= 0 else "−") + fmt_s(abs(seconds))


def _reading(result: dict[str, Any], rec: dict[str, float]) -> str:
    m = result["modes"]
    a, f = m["kt"], m.get("fit")
    lines = []
    for key in ("embedded", "redis_pg"):
        if key not in m:
            continue
        d = m[key]
        line = (
            f"- {MODES[key]}: warm wall {fmt_x(d['steady_ratio'])} Keras Tuner's "
            f"({_signed((d['per_trial_s'] or 0) - (a['per_trial_s'] or 0))} per trial"
        )
        if f:
            line += f"; {_signed((d['per_trial_s'] or 0) - (f['per_trial_s'] or 0))} against the bare fit loop"
        line += (
            f"). Measured directly, the service's own work is {fmt_s(d['bookkeeping_s'])} per trial: "
            f"{fmt_s(d['gap_mean_s'])} between trials (Keras Tuner: {fmt_s(a['gap_mean_s'])}), "
            f"{fmt_s(EPOCHS * rec[key])} for {EPOCHS} epoch reports, and the rest in finishing (saving the "
            f"`.keras` model and checkpoint, reporting to the oracle under the study lock). Start-up: "
            f"{fmt_s(d['startup_s'])} from the submit to the first trial's start, which includes the worker's "
            f"TensorFlow import (that import took {fmt_s(a['import_s'])} in (a)'s process, whose spawn → first "
            f"trial was {fmt_s(a['startup_s'])})."
        )
        lines.append(line)
    lines.append(
        "- The rest of any difference in per-trial time is in the epochs themselves (building, tracing and "
        "fitting the same model), which on this 2-core machine vary by tens of percent from trial to trial and "
        "run to run (compare the epoch medians of (a′) and the service, which run identical code between their "
        "reports). Keras Tuner adds its own per-trial costs: `keras.backend.clear_session()` and `gc.collect()` "
        "before each build (in `Tuner._try_build`) and a best-weights checkpoint written whenever the objective "
        "improves (`SaveBestEpoch`); the service does neither. Treat per-trial differences under about 10 % as "
        "noise (more when other processes took a visible share of the machine, second table row; then even the "
        "bare loop can come out slower than the service); the bookkeeping row is the service's cost."
    )
    return "**Reading.**\n\n" + "\n".join(lines)
