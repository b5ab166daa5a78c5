"""How soon a submitted study's first trial starts on a worker that is already up: warmed (Keras imported,
one tiny model trained and the default data set split at process start) against cold
(``TUNER_WORKER_WARM_UP=0``: the first task pays for all of that).

Per configuration: a fresh home (SQLite database, embedded broker), one ``tuner-service worker`` process,
started and left until Celery says it is ready (plus one second), then one digits study of one 1-epoch trial
submitted through the service's own ``submit_study``; the measure is the trial's ``started_at`` minus the
study's ``created_at`` (claim included, training not), and the trial's own duration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, fmt_x, md_table, ratio, wait_until

NAME = "worker_start"
TITLE = "First trial on a ready worker: warmed up at process start or cold"


def measure(root: Path, warm: bool) -> dict[str, Any]:
    from tuner_service.config import load_settings
    from tuner_service.launcher import settings_env
    from tuner_service.store import Store
    from tuner_service.study import submit_study
    from workers.app import celery_for, enqueue_trials

    home = root / ("warm" if warm else "cold")
    settings = load_settings({"TUNER_HOME": str(home), "TUNER_WORKER_WARM_UP": "1" if warm else "0"})
    store = Store(settings.database_url)
    store.upgrade()
    env = {**os.environ, **settings_env(settings), "TUNER_WORKER_WARM_UP": "1" if warm else "0",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    log_path = home / "worker.log"
    spawned = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tuner_service.cli", "worker", "--concurrency", "1"],
                                env=env, stdout=log, stderr=log, cwd=REPO)  # fmt: skip
    try:
        if not wait_until(lambda: " ready." in log_path.read_text(errors="replace"), timeout_s=300, every_s=0.1):
            raise RuntimeError(f"worker not ready:\n{log_path.read_text()[-2000:]}")
        ready_s = time.monotonic() - spawned
        time.sleep(1.0)
        celery = celery_for(settings)
        doc = {
            "name": "first-trial",
            "dataset": "digits",
            "task": {"type": "multiclass"},
            "objective": "val_accuracy",
            "search_space": {"neurons": {"type": "fixed", "value": 32}},
            "max_trials": 1,
            "early_stopping": {"patience": 1, "max_epochs": 1},
        }
        study = submit_study(store, settings, doc, lambda pool, n: enqueue_trials(celery, pool, n))
        if not wait_until(lambda: store.get_study(study.id).is_terminal, timeout_s=300, every_s=0.1):
            raise RuntimeError(f"study not finished:\n{log_path.read_text()[-2000:]}")
        trial = store.list_trials(study.id, sort="created", limit=1).items[0]
        created = store.get_study(study.id).created_at
        return {
            "ready_s": ready_s,
            "submit_to_start_s": (trial.started_at - created).total_seconds(),
            "trial_s": trial.duration_s,
            "status": trial.status,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        store.dispose()


def run(quick: bool) -> dict[str, Any]:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-worker-start-") as tmp:
        # Smoke-sized: the warmed worker only (each worker start costs a TensorFlow import).
        rows = {"warm": measure(Path(tmp), warm=True)} if quick else {}
        if not quick:
            rows = {"cold": measure(Path(tmp), warm=False), "warm": measure(Path(tmp), warm=True)}
    return {"configs": rows, "load_before": load, "load_after": os.getloadavg()[0]}


def markdown(result: dict[str, Any]) -> str:
    warm = result["configs"]["warm"]
    cold = result["configs"].get("cold") or {"ready_s": float("nan"), "submit_to_start_s": None,
                                               "trial_s": float("nan"), "status": "not run (--quick)"}  # fmt: skip
    cold_start, warm_start = cold["submit_to_start_s"], warm["submit_to_start_s"]
    table = md_table(
        ["worker", "spawn → ready", "submitted → trial started", "trial (1 epoch)", "status"],
        [
            ["cold (`TUNER_WORKER_WARM_UP=0`)", f"{cold['ready_s']:.1f} s",
             "n/a" if cold_start is None else f"{cold_start:.2f} s (1.00×)", f"{cold['trial_s']:.2f} s",
             cold["status"]],
            ["warmed at start (default)", f"{warm['ready_s']:.1f} s",
             f"{warm_start:.2f} s ({fmt_x(ratio(warm_start, cold_start))})", f"{warm['trial_s']:.2f} s",
             warm["status"]],
        ],
    )  # fmt: skip
    return (
        f"{__doc__.strip()}\n\n{table}\n\n"
        "A cold worker is ready sooner but makes the first trial wait for the Keras import; a warmed one pays "
        "that before it says it is ready, so the first claimed trial starts at once."
    )
