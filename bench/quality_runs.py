"""One process of the search-quality benchmark: run contenders on one task and seed, write what they trained.

``python -m bench.quality_runs SPEC.json OUT.json``. SPEC names the task, the seed, the contenders and the
budget; OUT receives, per contender, the objective of every epoch actually trained, in training order (so
the orchestrator can cut any run at the same epoch budget), the number of trials and the wall time.

Every contender builds its models with ``tuner_service.hypermodel.build_model`` on the same split
(validation fraction 0.2, seed 0) and the same normalization statistics. Imports TensorFlow/Keras.
"""

from __future__ import annotations

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
}
KT_CONTENDERS = {"kt_random": "RandomSearch", "kt_bayesian": "BayesianOptimization", "kt_hyperband": "Hyperband"}
SERVICE_CONTENDERS = {
    "svc_random": "random",
    "svc_bayesian": "bayesian",
    "svc_tpe": "tpe",
    "svc_hyperband": "hyperband",
    "svc_asha": "asha",
}
CONTENDERS = [*KT_CONTENDERS, "optuna_tpe", *SERVICE_CONTENDERS]

# Objective of every epoch trained by the in-process contenders (module level: Keras Tuner deep-copies callbacks).
CURVE: list[float | None] = []


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
            if len(CURVE) >= self.budget:
                self.model.stop_training = True

    return EpochLog


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
    return {"curve": list(CURVE), "trials": len(tuner.oracle.trials), "statuses": statuses, "ended": ended}


# -- Optuna: TPE with the median pruner -------------------------------------------------------------------


def run_optuna(ctx: Context, seed: int, workdir: Path) -> dict[str, Any]:
    import keras
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    CURVE.clear()

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
        history = model.fit(
            **ctx.fit_data(),
            epochs=ctx.max_epochs,
            batch_size=values["batch_size"],
            callbacks=[_early_stopping(ctx), report, _epoch_logger()(ctx.objective, ctx.budget)],
            verbose=0,
        )
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
    return {"curve": list(CURVE), "trials": len(study.trials), "statuses": statuses, "ended": "budget spent"}


# -- the service's own core, in process -------------------------------------------------------------------


def study_doc(ctx: Context, algorithm: str, seed: int) -> dict[str, Any]:
    algo: dict[str, Any] = {"name": algorithm}
    max_trials = 2000
    if algorithm == "hyperband":
        algo.update(max_epochs=ctx.max_epochs, factor=ctx.hyperband_factor, hyperband_iterations=3)
    elif algorithm == "asha":
        algo.update(min_epochs=ctx.asha_min_epochs, max_epochs=ctx.max_epochs, reduction_factor=ctx.asha_factor)
    return {
        "name": f"quality-{ctx.name}-{algorithm}-{seed}",
        "dataset": f"builtin:{ctx.name}",
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
    from sqlalchemy import func, select

    from tuner_service.config import load_settings
    from tuner_service.search import Claim, Done, Wait, claim_next, finish_trial
    from tuner_service.store import Store
    from tuner_service.store.models import EpochRow, TrialRow
    from tuner_service.study import submit_study
    from tuner_service.training import train_trial

    settings = load_settings({"TUNER_HOME": str(workdir / "home")})
    store = Store(settings.database_url)
    store.upgrade()
    try:
        study = submit_study(store, settings, study_doc(ctx, SERVICE_CONTENDERS[contender], seed), lambda pool, n: None)
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
            select(EpochRow.metrics)
            .join(TrialRow, TrialRow.id == EpochRow.trial_id)
            .where(TrialRow.study_id == study.id)
            .order_by(EpochRow.id)
        )
        with store._read() as session:
            curve = [_finite(m.get(ctx.objective)) for m in session.scalars(curve_query)]
        record = store.get_study(study.id)
        counts = store.trial_counts(study.id)
        return {
            "curve": curve,
            "trials": sum(counts.values()),
            "statuses": counts,
            "ended": ended,
            "store_best": record.best_score,
        }
    finally:
        store.dispose()


# -- the process ------------------------------------------------------------------------------------------


def make_context(spec: dict[str, Any], artifacts: Path) -> Context:
    from tuner_service.datasets import describe_builtin, load_split
    from tuner_service.hypermodel import normalization_stats, target_stats
    from tuner_service.task import TaskSpec

    task_type, objective, direction = TASKS[spec["task"]]
    task = TaskSpec.from_json({"type": task_type})
    info = describe_builtin(spec["task"])
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
        ctx = make_context(spec, root)
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
                f"{run['trials']} trials, {run['wall_s']:.0f} s ({run['ended']})",
                flush=True,
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
