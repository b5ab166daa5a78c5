"""One process of the search-quality benchmark: run contenders on one task and seed, write what they trained.

``python -m bench.quality_runs SPEC.json OUT.json``. SPEC names the task, the seed, the contenders and the
budget; OUT receives, per contender, the objective of every epoch actually trained, in training order (so
the orchestrator can cut any run at the same epoch budget), the number of trials, the wall time, and the
held-out test score of the run's best model.

Each task's rows are first split into a development set and a test set (fraction :data:`TEST_FRACTION`,
seed :data:`TEST_SEED`, stratified for classes); the test rows are never seen by a search. The development
set is handed to the service as an uploaded .npz, and every contender trains on the service's own split of
it (validation fraction 0.2, seed 0) with the same normalization statistics, building its models with
``tuner_service.hypermodel.build_model``. Imports TensorFlow/Keras.
"""

from __future__ import annotations

import io
import json
import math
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The classic search space of the README, as the service's JSON and, below, as Keras Tuner and Optuna code.
SPACE: dict[str, Any] = {
    "hidden_layers": {"type": "int", "min": 0, "max": 8},
    "neurons": {"type": "int", "min": 16, "max": 256, "sampling": "log"},
    "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
    "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
    "batch_size": {"type": "choice", "values": [32, 64, 128]},
}
TASKS: dict[str, tuple[str, str, str]] = {  # data set: (task type, objective, direction)
    "digits": ("multiclass", "val_accuracy", "max"),
    "breast_cancer": ("binary", "val_accuracy", "max"),
    "diabetes": ("regression", "val_mae", "min"),
    "wine": ("multiclass", "val_accuracy", "max"),
    "synthetic_20k": ("multiclass", "val_accuracy", "max"),
}
# The larger task: scikit-learn's make_classification, generated in process with a fixed seed.
SYNTHETIC_20K = {
    "n_samples": 20_000,
    "n_features": 100,
    "n_informative": 20,
    "n_redundant": 10,
    "n_classes": 4,
    "n_clusters_per_class": 2,
    "flip_y": 0.02,
    "class_sep": 1.0,
    "random_state": 0,
}
TEST_FRACTION = 0.2  # rows held out per task before any search, for the test score of each run's best model
TEST_SEED = 7
KT_CONTENDERS = {"kt_random": "RandomSearch", "kt_bayesian": "BayesianOptimization", "kt_hyperband": "Hyperband"}
SERVICE_CONTENDERS = {
    "svc_random": "random",
    "svc_bayesian": "bayesian",
    "svc_tpe": "tpe",
    "svc_hyperband": "hyperband",
    "svc_asha": "asha",
    "svc_asha_tpe": "asha",
}
# The service contenders whose new configurations come from a model (ASHA's ``sampler``).
SAMPLER_OF = {"svc_asha_tpe": "tpe"}
CONTENDERS = [*KT_CONTENDERS, "optuna_tpe", *SERVICE_CONTENDERS]

# Objective of every epoch trained by the in-process contenders, and the trial each epoch belongs to (module
# level: Keras Tuner deep-copies callbacks).
CURVE: list[float | None] = []
TRIAL_OF: list[Any] = []
CURRENT_TRIAL: list[Any] = [None]


class BudgetSpent(Exception):
    """Raised between two trials once the run's epoch budget is used up."""


@dataclass(frozen=True)
class Context:
    """The task and its data, shared by every contender of the process."""

    name: str
    task: Any
    info: Any
    split: Any
    norm: Any
    objective: str
    direction: str
    budget: int
    max_epochs: int
    patience: int
    hyperband_factor: int
    asha_min_epochs: int
    asha_factor: int
    dev_npz: bytes  # the development rows as an .npz upload (x, y): what every search sees
    x_test: Any
    y_test: Any
    target: Any = None  # the training target's (mean, std) when the task scales it

    def build(self, values: dict[str, Any]) -> Any:
        from tuner_service.datasets import output_units
        from tuner_service.hypermodel import build_model

        return build_model(
            self.task,
            values,
            n_features=self.info.n_features,
            n_outputs=output_units(self.info, self.task.type),
            norm_stats=self.norm,
            target_stats=self.target,
        )

    def score(self, model: Any) -> dict[str, float | None]:
        """The model's objective on the held-out test rows, and again on the validation rows (which must give
        back the run's best validation score: a check that the model scored is the best trial's)."""
        metric = self.objective.removeprefix("val_")
        test = model.evaluate(self.x_test, self.y_test, batch_size=1024, verbose=0, return_dict=True)
        val = model.evaluate(self.split.x_val, self.split.y_val, batch_size=1024, verbose=0, return_dict=True)
        return {"test": _finite(test.get(metric)), "val_again": _finite(val.get(metric))}

    def fit_data(self) -> dict[str, Any]:
        return {
            "x": self.split.x_train,
            "y": self.split.y_train,
            "validation_data": (self.split.x_val, self.split.y_val),
        }


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _epoch_logger() -> Any:
    import keras

    class EpochLog(keras.callbacks.Callback):
        """Appends each epoch's objective to CURVE and stops training once the budget is spent."""

        def __init__(self, objective: str, budget: int) -> None:
            super().__init__()
            self.objective, self.budget = objective, budget

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            CURVE.append(_finite((logs or {}).get(self.objective)))
            TRIAL_OF.append(CURRENT_TRIAL[0])
            if len(CURVE) >= self.budget:
                self.model.stop_training = True

    return EpochLog


def first_best(curve: list[float | None], direction: str) -> int | None:
    """Index of the first epoch that holds the curve's best value (None when no epoch has a finite one)."""
    best, where = None, None
    for i, value in enumerate(curve):
        if value is not None and (best is None or (value > best if direction == "max" else value < best)):
            best, where = value, i
    return where


def _early_stopping(ctx: Context) -> Any:
    import keras

    return keras.callbacks.EarlyStopping(
        monitor=ctx.objective, mode=ctx.direction, patience=ctx.patience, restore_best_weights=True
    )


# -- Keras Tuner, in process ------------------------------------------------------------------------------


def run_keras_tuner(ctx: Context, contender: str, seed: int, workdir: Path) -> dict[str, Any]:
    import keras
    import keras_tuner as kt

    keras.utils.set_random_seed(seed)
    CURVE.clear()
    TRIAL_OF.clear()

    class MLP(kt.HyperModel):
        def build(self, hp: kt.HyperParameters) -> keras.Model:
            values = {
                "hidden_layers": hp.Int("hidden_layers", 0, 8),
                "neurons": hp.Int("neurons", 16, 256, sampling="log"),
                "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
                "optimizer": hp.Choice("optimizer", ["sgd", "adam"]),
                "batch_size": hp.Choice("batch_size", [32, 64, 128]),
            }
            return ctx.build(values)

        def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
            return model.fit(*args, batch_size=hp.get("batch_size"), **kwargs)

    base = getattr(kt, KT_CONTENDERS[contender])

    class Budgeted(base):  # type: ignore[misc, valid-type]
        def on_trial_begin(self, trial: Any) -> None:
            super().on_trial_begin(trial)
            CURRENT_TRIAL[0] = trial.trial_id

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)
            if len(CURVE) >= ctx.budget:
                raise BudgetSpent

    options: dict[str, Any] = {
        "hypermodel": MLP(),
        "objective": kt.Objective(ctx.objective, direction=ctx.direction),
        "seed": seed,
        "directory": str(workdir),
        "project_name": contender,
        "overwrite": True,
    }
    if contender == "kt_hyperband":
        options.update(max_epochs=ctx.max_epochs, factor=ctx.hyperband_factor, hyperband_iterations=3)
    else:
        options["max_trials"] = 2000
    tuner = Budgeted(**options)
    ended = "budget spent"
    try:
        tuner.search(
            **ctx.fit_data(),
            epochs=ctx.max_epochs,
            callbacks=[_early_stopping(ctx), _epoch_logger()(ctx.objective, ctx.budget)],
            verbose=0,
        )
        ended = "the tuner stopped by itself"
    except BudgetSpent:
        pass
    statuses: dict[str, int] = {}
    for trial in tuner.oracle.trials.values():
        statuses[trial.status] = statuses.get(trial.status, 0) + 1
    run = {"curve": list(CURVE), "trials": len(tuner.oracle.trials), "statuses": statuses, "ended": ended}
    best = first_best(CURVE[: ctx.budget], ctx.direction)
    if best is not None:
        # The trial that first reached the run's best; Keras Tuner kept its best epoch's weights.
        run.update(ctx.score(tuner.load_model(tuner.oracle.get_trial(TRIAL_OF[best]))))
    return run


# -- Optuna: TPE with the median pruner -------------------------------------------------------------------


def run_optuna(ctx: Context, seed: int, workdir: Path) -> dict[str, Any]:
    import keras
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    CURVE.clear()
    kept: dict[str, Any] = {}  # the model of the trial that first reached the run's best so far

    class Report(keras.callbacks.Callback):
        def __init__(self, trial: optuna.Trial) -> None:
            super().__init__()
            self.trial, self.pruned = trial, False

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            value = _finite((logs or {}).get(ctx.objective))
            if value is None:
                return
            self.trial.report(value, epoch)
            if self.trial.should_prune():
                self.pruned = True
                self.model.stop_training = True

    def objective(trial: optuna.Trial) -> float:
        values = {
            "hidden_layers": trial.suggest_int("hidden_layers", 0, 8),
            "neurons": trial.suggest_int("neurons", 16, 256, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "optimizer": trial.suggest_categorical("optimizer", ["sgd", "adam"]),
            "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        }
        keras.utils.set_random_seed(seed * 100_003 + trial.number)
        model = ctx.build(values)
        report = Report(trial)
        before = len(CURVE)
        history = model.fit(
            **ctx.fit_data(),
            epochs=ctx.max_epochs,
            batch_size=values["batch_size"],
            callbacks=[_early_stopping(ctx), report, _epoch_logger()(ctx.objective, ctx.budget)],
            verbose=0,
        )
        best = first_best(CURVE[: ctx.budget], ctx.direction)
        if best is not None and best >= before:  # this trial set a new best: keep its best epoch's weights
            kept.update(values=values, weights=model.get_weights())
        keras.backend.clear_session()
        if report.pruned:
            raise optuna.TrialPruned()
        scores = [v for v in (_finite(s) for s in history.history[ctx.objective]) if v is not None]
        if not scores:
            raise ValueError("no finite objective")  # a failed trial, as in the other contenders
        return max(scores) if ctx.direction == "max" else min(scores)

    study = optuna.create_study(
        direction="maximize" if ctx.direction == "max" else "minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    while len(CURVE) < ctx.budget:
        study.optimize(objective, n_trials=1, catch=(ValueError,))
    statuses: dict[str, int] = {}
    for trial in study.trials:
        statuses[trial.state.name] = statuses.get(trial.state.name, 0) + 1
    run = {"curve": list(CURVE), "trials": len(study.trials), "statuses": statuses, "ended": "budget spent"}
    if kept:
        model = ctx.build(kept["values"])
        model.set_weights(kept["weights"])
        run.update(ctx.score(model))
    return run


# -- the service's own core, in process -------------------------------------------------------------------


def initial_points(budget: int, max_epochs: int) -> int:
    """Random trials before ``bayesian``/``tpe`` model anything: the service's default for a study whose
    ``max_trials`` is what the budget holds at full length (budget / max_epochs trials)."""
    from tuner_service.proposals import default_initial_points

    return default_initial_points(budget // max_epochs, len(SPACE))


def asha_initial_points(budget: int, min_epochs: int, max_epochs: int, factor: int) -> int:
    """Random configurations before an ASHA study's sampler models anything: the service's default for a study
    whose ``max_trials`` is what the budget holds in ASHA's trials. A full set of rungs starts η^k configurations,
    promotes η^(k-1) of them, ... 1 to the top, each promotion training only the epochs its rung adds: that many
    trials for that many epochs (digits: 13 trials in 18 epochs, so 30 in 42)."""
    from tuner_service.asha import rung_epochs
    from tuner_service.proposals import default_initial_points

    rungs = rung_epochs(min_epochs, max_epochs, factor)
    top = len(rungs) - 1
    trials = sum(factor ** (top - i) for i in range(len(rungs)))
    epochs = sum(factor ** (top - i) * (rungs[i] - (rungs[i - 1] if i else 0)) for i in range(len(rungs)))
    return default_initial_points(round(budget * trials / epochs), len(SPACE))


def study_doc(ctx: Context, algorithm: str, seed: int, dataset: str, sampler: str | None = None) -> dict[str, Any]:
    algo: dict[str, Any] = {"name": algorithm}
    max_trials = 2000  # never the limit: the run ends when the budget's epochs are spent
    if algorithm in ("bayesian", "tpe"):
        algo["initial_points"] = initial_points(ctx.budget, ctx.max_epochs)
    if algorithm == "hyperband":
        algo.update(max_epochs=ctx.max_epochs, factor=ctx.hyperband_factor, hyperband_iterations=3)
    elif algorithm == "asha":
        algo.update(min_epochs=ctx.asha_min_epochs, max_epochs=ctx.max_epochs, reduction_factor=ctx.asha_factor)
        if sampler is not None:
            algo.update(
                sampler=sampler,
                initial_points=asha_initial_points(ctx.budget, ctx.asha_min_epochs, ctx.max_epochs, ctx.asha_factor),
            )
    return {
        "name": f"quality-{ctx.name}-{algorithm}-{seed}",
        "dataset": dataset,
        "task": {"type": ctx.task.type},
        "objective": {"name": ctx.objective, "direction": ctx.direction},
        "search_space": SPACE,
        "algorithm": algo,
        "max_trials": max_trials,
        "parallelism": 1,
        "seed": seed,
        "early_stopping": {"patience": ctx.patience, "max_epochs": ctx.max_epochs},
        "validation": {"fraction": 0.2, "seed": 0},
    }


def run_service(ctx: Context, contender: str, seed: int, workdir: Path) -> dict[str, Any]:
    """What a worker does (claim → train → finish), minus the broker, until the store counts the budget."""
    import keras
    from sqlalchemy import func, select

    from tuner_service.catalog import register_dataset
    from tuner_service.config import load_settings
    from tuner_service.datasets import ingest_upload
    from tuner_service.search import Claim, Done, Wait, claim_next, finish_trial
    from tuner_service.store import Store
    from tuner_service.store.models import EpochRow, TrialRow
    from tuner_service.study import submit_study
    from tuner_service.training import train_trial

    settings = load_settings({"TUNER_HOME": str(workdir / "home")})
    store = Store(settings.database_url)
    store.upgrade()
    try:
        info = ingest_upload(ctx.dev_npz, f"{ctx.name}-dev.npz", settings.artifacts, max_bytes=len(ctx.dev_npz))
        register_dataset(store, info)
        doc = study_doc(ctx, SERVICE_CONTENDERS[contender], seed, info.key, SAMPLER_OF.get(contender))
        study = submit_study(store, settings, doc, lambda pool, n: None)
        epochs_of_study = (
            select(func.count())
            .select_from(EpochRow)
            .join(TrialRow, TrialRow.id == EpochRow.trial_id)
            .where(TrialRow.study_id == study.id)
        )
        used, ended = 0, "budget spent"
        while used < ctx.budget:
            claim = claim_next(
                store,
                study.pool,
                ticket=uuid.uuid4().hex,
                worker="bench-quality",
                heartbeat_timeout_s=settings.heartbeat_timeout_s,
                window_s=settings.fair_share_window_s,
            )
            if isinstance(claim, Wait):  # nothing runs besides us: a Wait would never end
                ended = f"the oracle asked to wait with no trial running ({claim})"
                break
            if isinstance(claim, Done):
                ended = f"the study ended: {claim.reason}"
                break
            assert isinstance(claim, Claim)
            outcome = train_trial(store, settings, claim)
            finish_trial(store, study.id, claim.trial.id, outcome)
            with store._read() as session:
                used = session.scalar(epochs_of_study) or 0
        curve_query = (
            select(EpochRow.metrics, EpochRow.trial_id)
            .join(TrialRow, TrialRow.id == EpochRow.trial_id)
            .where(TrialRow.study_id == study.id)
            .order_by(EpochRow.id)
        )
        with store._read() as session:
            rows = session.execute(curve_query).all()
        curve = [_finite(metrics.get(ctx.objective)) for metrics, _trial in rows]
        record = store.get_study(study.id)
        counts = store.trial_counts(study.id)
        run = {
            "curve": curve,
            "trials": sum(counts.values()),
            "statuses": counts,
            "ended": ended,
            "store_best": record.best_score,
        }
        best = first_best(curve[: ctx.budget], ctx.direction)
        if best is not None:
            # The trial that first reached the run's best: the model the service saved for it (its best epoch).
            with store._read() as session:
                trial = session.get(TrialRow, rows[best][1])
                model_path, trial_score = trial.model_path, trial.score
            run.update(ctx.score(keras.models.load_model(settings.artifacts / model_path)))
            # Only the trial that crossed the budget can have its saved best epoch beyond it.
            run["model_beyond_budget"] = trial_score != curve[best]
        return run
    finally:
        store.dispose()


# -- the process ------------------------------------------------------------------------------------------


def task_rows(name: str) -> tuple[Any, Any]:
    """All rows of a task: a scikit-learn data set, or the synthetic classification generated here."""
    from sklearn import datasets as sk

    if name == "synthetic_20k":
        return sk.make_classification(**SYNTHETIC_20K)
    loader = {
        "digits": sk.load_digits,
        "breast_cancer": sk.load_breast_cancer,
        "diabetes": sk.load_diabetes,
        "wine": sk.load_wine,
    }[name]
    return loader(return_X_y=True)


def dev_and_test(name: str) -> tuple[bytes, Any, Any]:
    """The development rows as an .npz upload, and the held-out test rows (features, targets laid out as the
    service lays out the task's targets)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from tuner_service.datasets import _encode_target, _targets_for, infer_target_kind

    task_type = TASKS[name][0]
    x, y = task_rows(name)
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    kind, _outputs = infer_target_kind(y)
    stratify = y if kind in ("binary", "multiclass") else None
    dev, test = train_test_split(np.arange(len(x)), test_size=TEST_FRACTION, random_state=TEST_SEED, stratify=stratify)
    buffer = io.BytesIO()
    np.savez(buffer, x=x[dev], y=y[dev])
    # Class ids from all rows (the service derives the same ones from the development rows, which hold every class).
    return buffer.getvalue(), x[test], _targets_for(_encode_target(y, kind)[test], task_type)


def make_context(spec: dict[str, Any], artifacts: Path) -> Context:
    from tuner_service.datasets import ingest_upload, load_split
    from tuner_service.hypermodel import normalization_stats, target_stats
    from tuner_service.task import TaskSpec

    task_type, objective, direction = TASKS[spec["task"]]
    task = TaskSpec.from_json({"type": task_type})
    dev_npz, x_test, y_test = dev_and_test(spec["task"])
    info = ingest_upload(dev_npz, f"{spec['task']}-dev.npz", artifacts, max_bytes=len(dev_npz))
    split = load_split(info, artifacts, validation_fraction=0.2, seed=0, task_type=task_type)
    return Context(
        name=spec["task"],
        task=task,
        info=info,
        split=split,
        norm=normalization_stats(split.x_train),
        objective=objective,
        direction=direction,
        budget=spec["budget"],
        max_epochs=spec["max_epochs"],
        patience=spec["patience"],
        hyperband_factor=spec["hyperband_factor"],
        asha_min_epochs=spec["asha_min_epochs"],
        asha_factor=spec["asha_factor"],
        dev_npz=dev_npz,
        x_test=x_test,
        y_test=y_test,
        target=target_stats(split.y_train) if task.scale_target else None,
    )


def main(spec_path: Path, out_path: Path) -> None:
    import tensorflow as tf

    # Two of these processes share the machine's two cores; one thread each is also faster for models this small.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    spec = json.loads(spec_path.read_text())
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        root = Path(tmp)
        ctx = make_context(spec, root / "data")
        for contender in spec["contenders"]:
            workdir = root / contender
            workdir.mkdir()
            start = time.monotonic()
            if contender in KT_CONTENDERS:
                run = run_keras_tuner(ctx, contender, spec["seed"], workdir)
            elif contender == "optuna_tpe":
                run = run_optuna(ctx, spec["seed"], workdir)
            else:
                run = run_service(ctx, contender, spec["seed"], workdir)
            run.update(
                {"contender": contender, "task": spec["task"], "seed": spec["seed"], "wall_s": time.monotonic() - start}
            )
            results.append(run)
            out_path.write_text(json.dumps(results))  # partial results survive a later failure
            print(
                f"[quality] {spec['task']} seed {spec['seed']} {contender}: {len(run['curve'])} epochs, "
                f"{run['trials']} trials, {run['wall_s']:.0f} s ({run['ended']}); test {run.get('test')}",
                flush=True,
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
