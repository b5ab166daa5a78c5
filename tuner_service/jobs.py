"""Training jobs outside a study's budget, run by workers: the learning-rate range test and reruns of a
trial. Imports Keras; only workers import this module."""

from __future__ import annotations

import math
import traceback
from typing import Any

import keras
import numpy as np

from tuner_service.config import Settings
from tuner_service.datasets import DatasetInfo, load_split, output_units
from tuner_service.hypermodel import TARGET_UNITS_LOSS, batch_size, build_model, normalization_stats, target_stats
from tuner_service.lr_range import RangeTestSpec, analyse, smooth
from tuner_service.store import JobRecord, Store
from tuner_service.training import _best_epoch, environment, fit_once, prepare, trial_seed

MAX_CURVE_POINTS = 500


def run_job(store: Store, settings: Settings, job: JobRecord) -> None:
    """Run a started job to its end and store its result or its error (never raises for a job's error)."""
    try:
        result = {"lr_range_test": lr_range_test, "rerun": rerun}[job.kind](store, settings, job)
    except Exception as exc:  # a failed job is a result to report, not a worker crash
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        store.finish_job(job.id, status="failed", error=f"{detail}\n{traceback.format_exc(limit=-3)}")
        return
    store.finish_job(job.id, status="completed", result=result)


class RangeRecorder(keras.callbacks.Callback):
    """Raises the learning rate exponentially batch by batch and records each batch's own loss."""

    def __init__(self, spec: RangeTestSpec, report: Any) -> None:
        super().__init__()
        self.spec = spec
        self.report = report
        self.rates: list[float] = []
        self.losses: list[float] = []
        self._mean_before = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._mean_before = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.optimizer.learning_rate.assign(self.spec.rate(len(self.rates)))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Keras reports the running mean over the epoch; undo it to get this batch's loss. A scaled target's
        # model minimises a standardized loss but also measures it in the target's units: report those.
        logs = logs or {}
        mean = float(logs.get(TARGET_UNITS_LOSS, logs.get("loss", math.nan)))
        loss = (batch + 1) * mean - batch * self._mean_before
        self._mean_before = mean
        self.rates.append(self.spec.rate(len(self.rates)))
        self.losses.append(loss)
        if len(self.losses) % 25 == 0:
            self.report(len(self.losses) / self.spec.steps)
        if len(self.losses) >= self.spec.steps or not math.isfinite(loss) or self._diverged():
            self.model.stop_training = True

    def _diverged(self) -> bool:
        if len(self.losses) < 20:
            return False
        smoothed = smooth(self.losses, self.spec.smoothing)
        return smoothed[-1] > 4 * min(smoothed)


def lr_range_test(store: Store, settings: Settings, job: JobRecord) -> dict[str, Any]:
    spec = RangeTestSpec.from_json(job.spec)
    info = DatasetInfo.from_json(store.get_dataset(job.dataset_id).info)
    split = load_split(info, settings.artifacts, validation_fraction=0.2, seed=0, task_type=spec.task.type)
    keras.utils.set_random_seed(spec.seed)
    values = {**spec.architecture, "learning_rate": spec.min_lr}
    norm = normalization_stats(split.x_train) if spec.task.normalize else None
    # With task.scale_target the rates are tried on the standardized target, as a study will train with them.
    target = target_stats(split.y_train) if spec.task.scale_target else None
    n_outputs = output_units(info, spec.task.type)
    model = build_model(
        spec.task, values, n_features=info.n_features, n_outputs=n_outputs, norm_stats=norm, target_stats=target
    )
    recorder = RangeRecorder(spec, lambda progress: store.job_progress(job.id, progress))
    size = batch_size(values)
    epochs = math.ceil(spec.steps / math.ceil(len(split.x_train) / size))
    model.fit(split.x_train, split.y_train, batch_size=size, epochs=epochs, callbacks=[recorder], verbose=0)
    suggestion = analyse(recorder.rates, recorder.losses, beta=spec.smoothing)
    smoothed = smooth(recorder.losses, spec.smoothing)
    stride = max(1, math.ceil(len(recorder.rates) / MAX_CURVE_POINTS))
    curve = [
        {"lr": recorder.rates[i], "loss": recorder.losses[i], "smoothed": smoothed[i]}
        for i in range(0, len(recorder.rates), stride)
    ]
    return {"steps_run": len(recorder.losses), "curve": curve, "suggestion": suggestion.to_json()}


def rerun(store: Store, settings: Settings, job: JobRecord) -> dict[str, Any]:
    """Retrain a trial's hyperparameters: once with its own seed, then with other seeds; report the spread."""
    study = store.get_study(job.study_id)
    trial = store.get_trial(job.study_id, job.trial_id)
    # A promoted (ASHA/Hyperband) trial is retrained from scratch for all its epochs: no parent checkpoint.
    values = {k: v for k, v in trial.hyperparameters.items() if k not in ("tuner/initial_epoch", "tuner/trial_id")}
    prepared = prepare(store, settings, study)
    repeats = int(job.spec.get("repeats", 3))
    own_seed = (trial.environment or {}).get("seed", trial_seed(study, trial.number, 0))
    seeds = [own_seed] + [(own_seed + 7919 * (i + 1)) % 2**31 for i in range(repeats)]
    runs = []
    for index, seed in enumerate(seeds):
        _, history = fit_once(prepared, study, values, seed=seed, callbacks=[])
        best_epoch, metrics = _best_epoch(history, study.objective_name, study.direction, 0)
        # Counted from 1 in the result, as the API and dashboard show every epoch.
        runs.append({"seed": seed, "score": metrics[study.objective_name], "best_epoch": best_epoch + 1})
        store.job_progress(job.id, (index + 1) / len(seeds))
    others = np.array([r["score"] for r in runs[1:]], dtype=float)
    return {
        "objective": study.objective_name,
        "original": {"seed": own_seed, "score": trial.score, "environment": trial.environment},
        "same_seed": runs[0],
        "reproduced": trial.score is not None and abs(runs[0]["score"] - trial.score) <= 1e-6,
        "other_seeds": runs[1:],
        "spread": {
            "mean": float(others.mean()),
            "std": float(others.std(ddof=1)) if len(others) > 1 else 0.0,
            "min": float(others.min()),
            "max": float(others.max()),
        },
        "environment": environment(own_seed),
    }
