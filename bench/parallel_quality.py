"""The same model-based search with one worker and with four, at an equal number of epochs.

A study of ``TRIALS`` trials trains every trial for exactly ``EPOCHS`` epochs (early stopping's patience is
longer than that), so both runs spend the same epochs whatever the workers do. The service runs as
``tuner-service up`` would (``LocalService``: the API, the embedded SQLite database and broker, N real
worker processes), the study is submitted over HTTP, and the result is read from the store: the best
validation accuracy and how many trials repeated another trial's configuration (must be 0).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from bench.common import free_port, md_table

NAME = "parallel_quality"
TITLE = "Parallel model-based search: one worker against four at equal epochs"
FULL = {"algorithms": ["bayesian", "tpe"], "workers": [1, 4], "trials": 12, "epochs": 3, "seeds": [1]}
QUICK = {"algorithms": ["tpe"], "workers": [2], "trials": 2, "epochs": 1, "seeds": [1]}
SPACE: dict[str, Any] = {
    "hidden_layers": {"type": "int", "min": 0, "max": 2},
    "neurons": {"type": "int", "min": 16, "max": 256, "sampling": "log", "per_layer": True},
    "learning_rate": {"type": "float", "min": 1e-4, "max": 3e-2, "sampling": "log"},
    "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
    "momentum": {"type": "float", "min": 0.0, "max": 0.9, "condition": {"parent": "optimizer", "values": ["sgd"]}},
}


def study_doc(algorithm: str, workers: int, trials: int, epochs: int, seed: int) -> dict[str, Any]:
    return {
        "name": f"parallel-{algorithm}-{workers}w-{seed}",
        "dataset": "builtin:digits",
        "task": {"type": "multiclass"},
        "objective": {"name": "val_accuracy", "direction": "max"},
        "search_space": SPACE,
        "algorithm": algorithm,
        "max_trials": trials,
        "parallelism": workers,
        "seed": seed,
        "early_stopping": {"patience": epochs + 1, "max_epochs": epochs},
        "validation": {"fraction": 0.2, "seed": 0},
    }


def run_one(algorithm: str, workers: int, plan: dict[str, Any], seed: int, home: Path) -> dict[str, Any]:
    from tuner_service.client import Client
    from tuner_service.config import load_settings
    from tuner_service.launcher import LocalService
    from tuner_service.proposals import config_key
    from tuner_service.store import Store

    settings = load_settings({"TUNER_HOME": str(home)})
    service = LocalService(settings, port=free_port(), workers=workers, access_log=False)
    service.start()
    try:
        client = Client(service.url, token=service.admin_token, timeout=30)
        study = client.submit_study(study_doc(algorithm, workers, plan["trials"], plan["epochs"], seed))
        final = client.wait(study["id"], poll_s=0.5, timeout_s=1800)
    finally:
        service.stop()
    store = Store(settings.database_url)
    try:
        record = store.get_study(study["id"])
        trials = store.list_trials(record.id, sort="number", limit=1000).items
        keys = [config_key(t.hyperparameters) for t in trials]
        epochs = sum(len(store.epochs(t.id)) for t in trials)
        return {
            "algorithm": algorithm,
            "workers": workers,
            "seed": seed,
            "status": final["status"],
            "trials": len(trials),
            "epochs": epochs,
            "best": record.best_score,
            "duplicates": len(keys) - len(set(keys)),
            "workers_used": len({t.worker for t in trials}),
        }
    finally:
        store.dispose()


def run(quick: bool) -> dict[str, Any]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    plan = QUICK if quick else FULL
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-parallel-quality-") as tmp:
        for algorithm in plan["algorithms"]:
            for seed in plan["seeds"]:
                for workers in plan["workers"]:
                    home = Path(tmp) / f"{algorithm}-{seed}-{workers}"
                    rows.append(run_one(algorithm, workers, plan, seed, home))
                    print(f"[parallel_quality] {rows[-1]}", flush=True)
    return {"plan": plan, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    plan = result["plan"]
    rows = []
    base = {(r["algorithm"], r["seed"]): r["best"] for r in result["rows"] if r["workers"] == plan["workers"][0]}
    for r in result["rows"]:
        ref = base.get((r["algorithm"], r["seed"]))
        delta = "–" if ref is None or r["best"] is None else f"{r['best'] - ref:+.4f}"
        rows.append(
            [
                f"`{r['algorithm']}`",
                r["seed"],
                r["workers"],
                r["workers_used"],
                r["trials"],
                r["epochs"],
                "–" if r["best"] is None else f"{r['best']:.4f}",
                delta,
                r["duplicates"],
                r["status"],
            ]
        )
    headers = [
        "algorithm", "seed", "workers", "workers that trained", "trials", "epochs", "best val_accuracy",
        f"vs {plan['workers'][0]} worker", "repeated configurations", "study",
    ]  # fmt: skip
    setup = (
        f"digits, {plan['trials']} trials of exactly {plan['epochs']} epochs each (so every run trains the same "
        "epochs), the classic space with per-layer widths and sgd-only momentum; `LocalService` (API, embedded "
        "SQLite database and broker, N worker processes), the study submitted over HTTP. One seed per row: the "
        "difference between one and four workers is a single draw, not a mean."
    )
    return setup + "\n\n" + md_table(headers, rows)
