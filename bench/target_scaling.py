"""What standardizing a regression target (``task.scale_target``) does to a search on diabetes: the service's
random search and ASHA, the same seeds and space (learning rates 1e-4..0.3), with ``scale_target`` on and
off, run by the service's training path in one process (as ``bench/promotion_cost.py`` runs it). The best
``val_mae`` is in the target's units either way.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import md_table
from bench.promotion_cost import _run_study, _service, _warm_up

NAME = "target_scaling"
TITLE = "Target scaling on diabetes: task.scale_target off vs on"

SIZES = {
    False: {
        "diabetes_seeds": [0, 1, 2],
        "diabetes_random_trials": 12,
        "diabetes_asha_trials": 20,
        "diabetes_asha_factor": 3,
        "diabetes_max_epochs": 27,
    },
    True: {
        "diabetes_seeds": [0],
        "diabetes_random_trials": 1,
        "diabetes_asha_trials": 3,
        "diabetes_asha_factor": 2,
        "diabetes_max_epochs": 2,
    },
}
DIABETES_SPACE: dict[str, Any] = {
    "hidden_layers": {"type": "int", "min": 1, "max": 3},
    "neurons": {"type": "int", "min": 16, "max": 128, "sampling": "log"},
    "learning_rate": {"type": "float", "min": 1e-4, "max": 0.3, "sampling": "log"},
    "optimizer": {"type": "choice", "values": ["sgd", "adam", "rmsprop"]},
    "batch_size": {"type": "choice", "values": [16, 32]},
}


def _diabetes(sizes: dict[str, Any]) -> list[dict[str, Any]]:
    import math

    rows = []
    for algorithm in ("random", "asha"):
        for scale in (False, True):
            for seed in sizes["diabetes_seeds"]:
                with tempfile.TemporaryDirectory(prefix="bench-diabetes-") as home:
                    settings, store = _service(Path(home))
                    max_epochs = sizes["diabetes_max_epochs"]
                    algo: Any = (
                        {
                            "name": "asha",
                            "min_epochs": 1,
                            "max_epochs": max_epochs,
                            "reduction_factor": sizes["diabetes_asha_factor"],
                        }
                        if algorithm == "asha"
                        else "random"
                    )
                    doc = {
                        "name": f"diabetes-{algorithm}-{scale}",
                        "dataset": "builtin:diabetes",
                        "task": {"type": "regression", "scale_target": scale},
                        "objective": {"name": "val_mae", "direction": "min"},
                        "search_space": DIABETES_SPACE,
                        "algorithm": algo,
                        "max_trials": sizes[f"diabetes_{algorithm}_trials"],
                        "seed": seed,
                        "early_stopping": {"patience": 5, "max_epochs": max_epochs},
                        "validation": {"fraction": 0.2, "seed": 0},
                    }
                    run = _run_study(store, settings, doc)
                    trials = run["trials"]
                    scores = [t.score for t in trials if t.score is not None and math.isfinite(t.score)]
                    best = min(trials, key=lambda t: t.score if t.score is not None else math.inf)
                    rows.append(
                        {
                            "algorithm": algorithm,
                            "scale_target": scale,
                            "seed": seed,
                            "best_val_mae": min(scores) if scores else None,
                            "median_val_mae": statistics.median(scores) if scores else None,
                            "failed": sum(1 for t in trials if t.status == "failed"),
                            "trials": len(trials),
                            "best_learning_rate": best.hyperparameters.get("learning_rate"),
                            "best_optimizer": best.hyperparameters.get("optimizer"),
                            "epochs": sum(t.epochs_trained for t in trials),
                            "wall_s": run["wall_s"],
                        }
                    )
                    store.dispose()
    return rows


def run(quick: bool) -> dict[str, Any]:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sizes = SIZES[quick]
    _warm_up()
    return {"sizes": sizes, "diabetes": _diabetes(sizes)}


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    sizes = result["sizes"]
    parts: list[str] = []
    table = []
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for row in result["diabetes"]:
        groups.setdefault((row["algorithm"], row["scale_target"]), []).append(row)
    for (algorithm, scale), rows_ in groups.items():
        best = [r["best_val_mae"] for r in rows_ if r["best_val_mae"] is not None]
        table.append(
            [
                algorithm,
                "on" if scale else "off",
                ", ".join(_num(r["best_val_mae"], 1) for r in rows_),
                _num(statistics.mean(best), 1) if best else "–",
                ", ".join(_num(r["median_val_mae"], 1) for r in rows_),
                sum(r["failed"] for r in rows_),
                ", ".join(f"{r['best_optimizer']} {r['best_learning_rate']:.2g}" for r in rows_),
                sum(r["epochs"] for r in rows_),
            ]
        )
    seeds = ", ".join(str(s) for s in sizes["diabetes_seeds"])
    parts.append(
        f"**diabetes, `task.scale_target` off vs on** (seeds {seeds}; random: {sizes['diabetes_random_trials']} "
        f"trials, ASHA: {sizes['diabetes_asha_trials']} trials with `min_epochs` 1, η {sizes['diabetes_asha_factor']}; "
        f"`max_epochs` "
        f"{sizes['diabetes_max_epochs']}, patience 5; space: 1-3 hidden layers of 16-128, learning rate "
        "1e-4..0.3 log, sgd/adam/rmsprop, batch 16/32). `val_mae` is in the target's units in both (lower is "
        "better).\n\n"
        + md_table(
            [
                "algorithm",
                "scale_target",
                "best val_mae per seed",
                "mean best",
                "median trial val_mae per seed",
                "failed trials",
                "best trial's optimizer and rate",
                "epochs",
            ],
            table,
        )  # fmt: skip
    )
    return "\n\n".join(parts)
