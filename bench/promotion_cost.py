"""What a trained epoch costs under ASHA, against a plain ``model.fit`` loop on the same models.

ASHA through the service's own training path in this process (``claim_next`` → ``train_trial`` →
``finish_trial`` on an SQLite store, as a worker runs them, without the broker): every epoch reported to the
database, every trial's model saved, promotions continuing their parent. Twice: with the worker's in-memory
continuation (the default) and with it off (every promotion loads its parent's checkpoint). Baseline: the
configurations that ASHA trained, each built once by the same builder and fitted by one ``model.fit`` call for
as many epochs as ASHA gave it in all its rungs, same data, batch size and validation. Ratios are cost per
trained epoch against that loop in the same repeat (paired), wall time and this process's CPU time; the
median over repeats is kept. CPU time is the steadier measure on a shared machine: other processes'
load stretches wall time, not the work this process does.
"""

from __future__ import annotations

import gc
import io
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import fmt_s, fmt_x, md_table, ratio

NAME = "promotion_cost"
TITLE = "ASHA's cost per trained epoch against a plain model.fit loop"

MODEL = {"hidden_layers": 2, "neurons": 128, "optimizer": "adam", "batch_size": 64}
SIZES = {
    False: {
        "mnist_rows": 5000,
        "asha": {"min_epochs": 1, "max_epochs": 9, "reduction_factor": 3},
        "asha_trials": 13,
        "repeats": 3,
    },
    True: {
        "mnist_rows": 300,
        "asha": {"min_epochs": 1, "max_epochs": 2, "reduction_factor": 2},
        "asha_trials": 3,
        "repeats": 1,
    },
}


def _service(home: Path) -> tuple[Any, Any]:
    from tuner_service.config import load_settings
    from tuner_service.store import Store

    settings = load_settings({"TUNER_HOME": str(home)})
    store = Store(settings.database_url)
    store.upgrade()
    return settings, store


def _mnist_shaped(store: Any, settings: Any, rows: int) -> str:
    """A 784-feature, 10-class synthetic set uploaded as an .npz, as a user would; returns its key."""
    import numpy as np
    from sklearn.datasets import make_classification

    from tuner_service.datasets import ingest_upload

    x, y = make_classification(
        n_samples=rows, n_features=784, n_informative=60, n_redundant=100, n_classes=10, random_state=0
    )
    buffer = io.BytesIO()
    np.savez(buffer, x=x.astype(np.float32), y=y.astype(np.int64))
    info = ingest_upload(buffer.getvalue(), "mnist_shaped.npz", settings.artifacts, max_bytes=1 << 30)
    store.ensure_dataset(info.key, info.name, info.source, info.to_json())
    return info.key


def _run_study(store: Any, settings: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """Run a study to its end the way a worker does; wall time from the first claim to the last report."""
    from tuner_service.search import Claim, Done, Wait, claim_next, finish_trial
    from tuner_service.study import submit_study
    from tuner_service.training import train_trial

    study = submit_study(store, settings, doc, lambda pool, n: None)
    gc.collect()  # every timed run starts with the same garbage: none
    start, cpu = time.perf_counter(), time.process_time()
    while True:
        claim = claim_next(
            store, study.pool, ticket=uuid.uuid4().hex, worker="bench", heartbeat_timeout_s=3600, window_s=3600
        )
        if isinstance(claim, Wait | Done):
            break
        assert isinstance(claim, Claim)
        finish_trial(store, study.id, claim.trial.id, train_trial(store, settings, claim))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    trials = store.list_trials(study.id, sort="number", limit=1000).items
    return {"study": store.get_study(study.id), "trials": trials, "wall_s": wall, "cpu_s": cpu}


def _asha_doc(dataset: str, sizes: dict[str, Any], seed: int) -> dict[str, Any]:
    space: dict[str, Any] = {k: {"type": "fixed", "value": v} for k, v in MODEL.items()}
    space["learning_rate"] = {"type": "float", "min": 3e-4, "max": 3e-3, "sampling": "log"}
    return {
        "name": f"asha-cost-{dataset}",
        "dataset": dataset,
        "task": {"type": "multiclass"},
        "objective": {"name": "val_accuracy", "direction": "max"},
        "search_space": space,
        "algorithm": {"name": "asha", **sizes["asha"]},
        "max_trials": sizes["asha_trials"],
        "seed": seed,
        # No early stopping: every rung trains all its epochs, as the plain loop does.
        "early_stopping": {"patience": 1000, "max_epochs": sizes["asha"]["max_epochs"]},
        "validation": {"fraction": 0.2, "seed": 0},
    }


def _plain_loop(store: Any, settings: Any, study: Any, trials: list[Any]) -> dict[str, Any]:
    """The same configurations, each fitted once for all the epochs ASHA gave it, by one ``model.fit``."""
    from tuner_service.hypermodel import batch_size
    from tuner_service.training import new_model, prepare, trial_seed

    prepared = prepare(store, settings, study)
    epochs_of: dict[str, int] = {}
    values_of: dict[str, dict[str, Any]] = {}
    root: dict[str, str] = {}
    for t in trials:
        parent = t.hyperparameters.get("tuner/trial_id")
        root[t.oracle_trial_id] = root[parent] if parent else t.oracle_trial_id
        key = root[t.oracle_trial_id]
        epochs_of[key] = max(epochs_of.get(key, 0), t.epochs_run)
        values_of.setdefault(key, {k: v for k, v in t.hyperparameters.items() if not k.startswith("tuner/")})
    split = prepared.split
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    for number, (key, epochs) in enumerate(epochs_of.items()):
        import keras

        keras.utils.set_random_seed(trial_seed(study, number, 0))
        model = new_model(prepared, values_of[key])
        model.fit(
            split.x_train, split.y_train, validation_data=(split.x_val, split.y_val), epochs=epochs,
            batch_size=batch_size(values_of[key]), verbose=0,
        )  # fmt: skip
    return {
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu,
        "epochs": sum(epochs_of.values()),
        "configs": len(epochs_of),
    }


def _asha_cost(dataset_label: str, dataset: str, sizes: dict[str, Any]) -> dict[str, Any]:
    from tuner_service import training

    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "memory": [], "checkpoint": []}
    for repeat in range(sizes["repeats"]):
        for mode in ("memory", "checkpoint") if repeat % 2 == 0 else ("checkpoint", "memory"):
            with tempfile.TemporaryDirectory(prefix="bench-asha-") as home:
                settings, store = _service(Path(home))
                key = _mnist_shaped(store, settings, sizes["mnist_rows"]) if dataset == "mnist_shaped" else dataset
                saved = training.LIVE_MODELS.max_models
                training.LIVE_MODELS.clear()
                training.LIVE_MODELS.max_models = saved if mode == "memory" else 0
                try:
                    run = _run_study(store, settings, _asha_doc(key, sizes, seed=repeat))
                finally:
                    training.LIVE_MODELS.max_models = saved
                    training.LIVE_MODELS.clear()
                trials = run["trials"]
                epochs = sum(t.epochs_trained for t in trials)
                runs[mode].append(
                    {
                        "wall_s": run["wall_s"],
                        "cpu_s": run["cpu_s"],
                        "epochs": epochs,
                        "trials": len(trials),
                        "promotions": sum(1 for t in trials if t.hyperparameters.get("tuner/rung", 0) > 0),
                        "completed": sum(1 for t in trials if t.status == "completed"),
                        "best": run["study"].best_score,
                    }
                )
                if mode == "memory":
                    runs["plain"].append(_plain_loop(store, settings, run["study"], trials))
                store.dispose()
    summary: dict[str, Any] = {}
    for mode, rs in runs.items():
        summary[mode] = {
            "configs": rs[0].get("configs"),
            "trials": rs[0].get("trials"),
            "promotions": rs[0].get("promotions"),
            "epochs": statistics.median(r["epochs"] for r in rs),
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "cpu_s": statistics.median(r["cpu_s"] for r in rs),
            "wall_per_epoch_s": statistics.median(r["wall_s"] / r["epochs"] for r in rs),
            "cpu_per_epoch_s": statistics.median(r["cpu_s"] / r["epochs"] for r in rs),
        }
    for mode in ("memory", "checkpoint"):
        for clock in ("wall", "cpu"):
            paired = [
                ratio(r[f"{clock}_s"] / r["epochs"], base[f"{clock}_s"] / base["epochs"])
                for r, base in zip(runs[mode], runs["plain"], strict=True)
            ]
            summary[mode][f"{clock}_ratio"] = statistics.median(paired)
            summary[mode][f"{clock}_ratios"] = paired
    return {"dataset": dataset_label, "runs": runs, "summary": summary}


def _warm_up() -> None:
    """Pay TensorFlow's once-per-process costs before anything is timed, as a worker does before its first
    trial: the import, a first fit of the benchmark's model on both input widths (the first fit of a shape
    costs about 0.3 s more than later ones), then the worker's heap freeze."""
    import keras
    import numpy as np

    from tuner_service.training import freeze_heap

    for width in (784, 64):
        layers = [keras.Input((width,)), *(keras.layers.Dense(MODEL["neurons"], "relu") for _ in range(2))]
        model = keras.Sequential([*layers, keras.layers.Dense(10, "softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        x, y = np.zeros((256, width), np.float32), np.zeros(256, np.int64)
        model.fit(x, y, validation_data=(x, y), batch_size=MODEL["batch_size"], epochs=1, verbose=0)
    keras.backend.clear_session()
    freeze_heap()


def run(quick: bool) -> dict[str, Any]:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sizes = SIZES[quick]
    _warm_up()

    return {
        "sizes": sizes,
        "model": MODEL,
        "asha": [
            _asha_cost(f"MNIST-shaped synthetic ({sizes['mnist_rows']} × 784, 10 classes)", "mnist_shaped", sizes),
            _asha_cost("digits (1,797 × 64, 10 classes)", "builtin:digits", sizes),
        ],
    }


def markdown(result: dict[str, Any]) -> str:
    sizes = result["sizes"]
    asha = sizes["asha"]
    model = ", ".join(f"{k} {v}" for k, v in result["model"].items())
    parts = [
        f"ASHA (`min_epochs` {asha['min_epochs']}, `max_epochs` {asha['max_epochs']}, η {asha['reduction_factor']}, "
        f"{sizes['asha_trials']} trials, learning rate 3e-4..3e-3, no early stopping) over one model ({model}) "
        "run by the service's training path in one process: `claim_next` → `train_trial` → `finish_trial` on an "
        "SQLite store, each epoch written to the database, each trial's model saved, promotions continuing their "
        "parent (weights, optimizer state, epoch counter). **Baseline**: the configurations ASHA trained, each "
        "built once by the same builder and fitted by one `model.fit` for all the epochs ASHA gave it, with the "
        "same validation data passed as arrays, as a Keras user passes them (the service passes the validation "
        "rows as a dataset batched once per split and batch size, which each of its fit calls and each epoch's "
        "evaluation reuse: the same batches, so the same metrics). Cost per trained epoch = wall time / epochs "
        "trained (`epochs_trained`); "
        f"ratios paired within each of {sizes['repeats']} interleaved repeats, median shown; CPU = this process's "
        "CPU time (all its threads), steadier than wall time on a shared machine. Before anything is timed the "
        "process fits the benchmark's model once per input width and freezes its heap, as a worker does after "
        "its warm-up, and every timed run starts after a full garbage collection. Target: ≤ 1.15× the plain loop.",
    ]
    for entry in result["asha"]:
        s = entry["summary"]
        p = s["plain"]
        rows = [
            ["plain `model.fit` loop (baseline)", p["configs"], p["epochs"], fmt_s(p["wall_s"]),
             fmt_s(p["wall_per_epoch_s"], 3), "1.00×", fmt_s(p["cpu_per_epoch_s"], 3), "1.00×"],
        ]  # fmt: skip
        for mode, label in (
            ("memory", "ASHA, promotions continue in memory (default)"),
            ("checkpoint", "ASHA, promotions load the parent's checkpoint"),
        ):
            m = s[mode]
            spread = ", ".join(fmt_x(x) for x in m["cpu_ratios"])
            rows.append(
                [f"{label}: {m['trials']} trials, {m['promotions']} promotions", m["trials"] - m["promotions"],
                 m["epochs"], fmt_s(m["wall_s"]), fmt_s(m["wall_per_epoch_s"], 3), fmt_x(m["wall_ratio"]),
                 fmt_s(m["cpu_per_epoch_s"], 3), f"**{fmt_x(m['cpu_ratio'])}** ({spread})"]
            )  # fmt: skip
        verdict = "met" if s["memory"]["cpu_ratio"] <= 1.15 else "not met"
        parts.append(
            f"**{entry['dataset']}**: ASHA (in memory) costs {fmt_x(s['memory']['cpu_ratio'])} the plain loop's CPU "
            f"per trained epoch (median of the paired repeats): the 1.15× target is {verdict} here.\n\n"
            + md_table(
                [
                    "run",
                    "configurations",
                    "epochs trained",
                    "wall (median)",
                    "wall per epoch",
                    "vs plain (wall)",
                    "CPU per epoch",
                    "vs plain (CPU; each repeat)",
                ],
                rows,
            )  # fmt: skip
        )
    return "\n\n".join(parts)
