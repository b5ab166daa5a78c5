"""Train one claimed trial: build the model, fit with early stopping, report every epoch, save it.

Imports Keras; only workers import this module.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tuner_service import shutdown
from tuner_service.config import Settings
from tuner_service.datasets import DatasetInfo, Split, load_split, output_units
from tuner_service.errors import DatabaseUnavailable
from tuner_service.hypermodel import normalization_stats
from tuner_service.hypermodels.registry import model_ref
from tuner_service.hypermodels.runtime import Context, Runner, runner_for, trial_hyperparameters
from tuner_service.outage import OutageLog, wait_out
from tuner_service.pruning import PrunerSpec, should_prune
from tuner_service.search import Claim, TrialOutcome
from tuner_service.store import Store, StudyRecord
from tuner_service.task import TaskSpec

log = logging.getLogger(__name__)
TAKEN_OVER = "trial taken over by another worker"  # the store's reason when the trial's ticket changed


class EpochReporter(keras.callbacks.Callback):
    """Writes each epoch's metrics to the store, stops training when the study says so, and asks the
    study's pruner whether this trial is still worth training."""

    def __init__(self, store: Store, claim: Claim, execution: int, pruner: PrunerSpec) -> None:
        super().__init__()
        self.store = store
        self.claim = claim
        self.execution = execution
        self.pruner = pruner
        initial = int(claim.values.get("tuner/initial_epoch", 0))
        self.curve: list[float | None] = [None] * initial  # the objective by absolute epoch
        self.stop_reason: str | None = None
        self.prune_reason: str | None = None
        self.preempted_at: int | None = None  # the epochs done when the worker was told to stop
        self.taken_over = False
        # Epochs the database did not take (an outage): written, in order, once it answers again.
        self.unsaved: list[tuple[int, dict[str, float]]] = []
        self._outage = OutageLog(log, f"database (trial {claim.trial.id} epochs)")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v) or np.ndim(v) == 0}
        metrics.pop("learning_rate", None)
        self.unsaved.append((epoch, metrics))
        control = self.flush()
        if control is not None and control.stop:
            self.stop_reason = control.reason
            self.taken_over = control.reason == TAKEN_OVER
            self.model.stop_training = True
            return
        study = self.claim.study
        self.curve.append(metrics.get(study.objective_name))
        if self._preempt(epoch):
            return
        if self.pruner.name == "none" or self.execution > 0 or self.unsaved:
            return
        try:
            others = self.store.objective_curves(study.id, study.objective_name, exclude_trial_id=self.claim.trial.id)
        except DatabaseUnavailable:
            return  # decide at a later epoch, once the other trials' curves can be read
        reason = should_prune(self.pruner, study.direction, self.curve, others)
        if reason is not None:
            self.prune_reason = f"pruned at epoch {epoch + 1}: {reason}"
            self.model.stop_training = True

    def flush(self, *, strict: bool = False) -> Any:
        """Write the epochs not yet stored; returns the last write's control, or ``None`` while the database
        is away (training goes on: an outage must not cost the trial). ``strict`` raises instead."""
        control = None
        while self.unsaved:
            epoch, metrics = self.unsaved[0]
            try:
                control = self.store.record_epoch(
                    self.claim.trial.id, self.execution, epoch, metrics, ticket=self.claim.trial.ticket
                )
            except DatabaseUnavailable as exc:
                if strict:
                    raise
                self._outage.failed(exc)
                return None
            self._outage.succeeded()
            self.unsaved.pop(0)
        return control

    def _preempt(self, epoch: int) -> bool:
        """Stop here if the worker is stopping, unless training ends at this epoch anyway (last epoch, early
        stopping): then the trial finishes normally."""
        if not shutdown.requested() or self.model.stop_training:
            return False
        if epoch + 1 >= int(self.params.get("epochs") or 0):
            return False
        self.preempted_at = epoch + 1
        self.model.stop_training = True
        return True


class Heartbeat:
    """Refreshes the trial's heartbeat from a thread, so a long epoch does not look like a dead worker."""

    def __init__(self, store: Store, trial_id: int, every_s: float) -> None:
        self._store, self._trial_id, self._every = store, trial_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def _run(self) -> None:
        outage = OutageLog(log, f"database (trial {self._trial_id} heartbeat)")
        while not self._stop.wait(self._every):
            try:
                self._store.heartbeat(self._trial_id)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any error; the next beat retries
                outage.failed(exc)
            else:
                outage.succeeded()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def study_dir(settings: Settings, study_id: int) -> Path:
    return settings.artifacts / "studies" / str(study_id)


def checkpoint_path(settings: Settings, study_id: int, oracle_trial_id: str) -> Path:
    return study_dir(settings, study_id) / "checkpoints" / f"{oracle_trial_id}.weights.h5"


# Normalization statistics per (data set, split): computed once per worker process, like the split.
_NORM_STATS: dict[tuple[str, float, int], tuple[Any, Any]] = {}


def _norm_stats(info: DatasetInfo, fraction: float, seed: int, split: Split) -> tuple[Any, Any]:
    key = (info.key, fraction, seed)  # the features do not depend on the task type
    if key not in _NORM_STATS:
        _NORM_STATS[key] = normalization_stats(split.x_train)
    return _NORM_STATS[key]


def preempt_checkpoint_path(settings: Settings, study_id: int, trial_id: int) -> Path:
    """Where a preempted trial's weights wait for the worker that resumes it."""
    return study_dir(settings, study_id) / "checkpoints" / f"preempted-{trial_id}.weights.h5"


def train_trial(store: Store, settings: Settings, claim: Claim) -> TrialOutcome | shutdown.Handback:
    """Run the claimed trial to its end; never raises for a training error (it becomes the outcome).

    Returns a :class:`~tuner_service.shutdown.Handback` instead when the worker is stopping (the trial is
    to be requeued from its checkpoint) or when another worker took the trial over.
    """
    try:
        with shutdown.training(), Heartbeat(store, claim.trial.id, every_s=max(1.0, settings.heartbeat_timeout_s / 4)):
            result = _train(store, settings, claim)
        if isinstance(result, TrialOutcome):
            preempt_checkpoint_path(settings, claim.study.id, claim.trial.id).unlink(missing_ok=True)
        return result
    except shutdown.GraceExpired:
        return shutdown.Handback("worker stopped before an epoch ended (grace period over)")
    except Exception as exc:  # a failed trial is a result to record, not a worker crash
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return TrialOutcome("failed", error=f"{detail}\n{traceback.format_exc(limit=-3)}")


@dataclass(frozen=True)
class Prepared:
    """Everything a fit needs that does not change between the trials of a study."""

    task: TaskSpec
    info: DatasetInfo
    split: Split
    norm: tuple[Any, Any] | None
    runner: Runner
    context: Context

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """Features as the study's hypermodel takes them (image sets as images: a view, not a copy)."""
        return self.runner.inputs(x, self.info.image_shape)


def prepare(store: Store, settings: Settings, study: StudyRecord) -> Prepared:
    """The study's task, data set, split (cached per worker process), normalization statistics and hypermodel."""
    spec = study.spec
    task = TaskSpec.from_json(spec["task"])
    info = DatasetInfo.from_json(store.get_dataset(study.dataset_id).info)
    validation = spec.get("validation", {})
    fraction, split_seed = validation.get("fraction", 0.2), validation.get("seed", 0)
    split = load_split(info, settings.artifacts, validation_fraction=fraction, seed=split_seed, task_type=task.type)
    norm = _norm_stats(info, fraction, split_seed, split) if task.normalize else None
    runner = runner_for(model_ref(spec).hypermodel, settings.hypermodels)
    shape = tuple(runner.inputs(split.x_train[:1], info.image_shape).shape[1:])
    context = Context(shape, output_units(info, task.type), task, norm)
    return Prepared(task, info, split, norm, runner, context)


def trial_seed(study: StudyRecord, number: int, execution: int) -> int:
    """The seed of one execution of one trial: fixed by the study's seed, so reruns can reproduce it."""
    return ((study.spec.get("seed") or 0) * 1_000_003 + number * 101 + execution) % 2**31


def fit_once(
    prepared: Prepared,
    study: StudyRecord,
    values: dict[str, Any],
    *,
    seed: int,
    callbacks: list[Any],
    resume_from: Path | None = None,
) -> tuple[Any, Any]:
    """Build the study's hypermodel for ``values`` and fit it (its own ``fit`` if it has one) with the
    study's early stopping; returns (model, history)."""
    early = study.spec.get("early_stopping", {})
    keras.utils.set_random_seed(seed)
    hp = trial_hyperparameters(study.spec["search_space"], values, mlp_domains=model_ref(study.spec).is_builtin_mlp)
    model = prepared.runner.build(hp, prepared.context)
    if resume_from is not None:
        model.load_weights(resume_from)
    stopper = keras.callbacks.EarlyStopping(
        monitor=study.objective_name,
        mode=study.direction,
        patience=int(early.get("patience", 3)),
        min_delta=float(early.get("min_delta", 0.0)),
        restore_best_weights=bool(early.get("restore_best_weights", True)),
    )
    history = prepared.runner.fit(
        hp,
        model,
        prepared.inputs(prepared.split.x_train),
        prepared.split.y_train,
        context=prepared.context,
        validation_data=(prepared.inputs(prepared.split.x_val), prepared.split.y_val),
        epochs=int(values.get("tuner/epochs", early.get("max_epochs", 50))),
        initial_epoch=int(values.get("tuner/initial_epoch", 0)),
        callbacks=[stopper, *callbacks],
        verbose=0,
    )
    if not hasattr(history, "history"):
        raise TypeError(f"the hypermodel's fit returned {type(history).__name__}; it must return model.fit's History")
    return model, history


def environment(seed: int) -> dict[str, Any]:
    """What a result depends on besides the hyperparameters: seed, libraries, backend, device."""
    import platform

    import keras_tuner
    import tensorflow

    return {
        "seed": seed,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "keras_tuner": keras_tuner.__version__,
        "backend": keras.backend.backend(),
        "backend_version": _backend_version(keras.backend.backend()),
        "device": os.environ.get("CUDA_VISIBLE_DEVICES") or "cpu",
    }


def _backend_version(backend: str) -> str | None:
    """The version of the library Keras trains with (KERAS_BACKEND: tensorflow, jax or torch)."""
    from importlib.metadata import PackageNotFoundError, version

    package = {"tensorflow": "tensorflow-cpu", "jax": "jax", "torch": "torch"}.get(backend, backend)
    for name in (package, backend):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def _train(store: Store, settings: Settings, claim: Claim) -> TrialOutcome | shutdown.Handback:
    study, trial = claim.study, claim.trial
    prepared = prepare(store, settings, study)
    initial_epoch = int(claim.values.get("tuner/initial_epoch", 0))
    executions = int(study.spec.get("executions_per_trial", 1))
    pruner = PrunerSpec(**study.spec.get("pruner", {}))
    resume = checkpoint_path(settings, study.id, claim.resumes) if claim.resumes is not None else None
    preempted = preempt_checkpoint_path(settings, study.id, trial.id)
    resumed = _resume_point(trial, preempted)
    earlier = wait_out(lambda: store.epochs(trial.id), what="reading a resumed trial") if resumed else []
    best: list[tuple[int, dict[str, float]]] = []
    model = None
    for execution in range(executions):
        if resumed is not None and execution < resumed[0]:
            # Finished before the preemption: its epochs are stored, its model is not needed any more.
            logs = _logs_of([e for e in earlier if e.execution == execution])
            best.append(_best_epoch(_History(logs), study.objective_name, study.direction, initial_epoch))
            continue
        reporter = EpochReporter(store, claim, execution, pruner)
        seed = trial_seed(study, trial.number, execution)
        values, start_from, first_epoch, before = claim.values, resume, initial_epoch, {}
        if resumed is not None and execution == resumed[0]:
            values = {**claim.values, "tuner/initial_epoch": resumed[1]}
            start_from, first_epoch = preempted, resumed[1]
            before = _logs_of([e for e in earlier if e.execution == execution and e.epoch < resumed[1]])
            reporter.curve = [None] * initial_epoch + list(before.get(study.objective_name, []))
            log.info("trial %s resumes execution %s at epoch %s", trial.id, execution, first_epoch)
        model, history = fit_once(prepared, study, values, seed=seed, callbacks=[reporter], resume_from=start_from)
        if reporter.unsaved:  # epochs trained during an outage: stored before the result, in order
            control = wait_out(functools.partial(reporter.flush, strict=True), what=f"trial {trial.id} epochs")
            if control is not None and control.stop and reporter.stop_reason is None:
                reporter.stop_reason = control.reason
                reporter.taken_over = control.reason == TAKEN_OVER
        if reporter.taken_over:
            return shutdown.Handback(reporter.stop_reason or "taken over", taken_over=True)
        if reporter.stop_reason is not None:
            return TrialOutcome("cancelled", error=reporter.stop_reason)
        if reporter.preempted_at is not None:
            _save_preempted(model, preempted)
            return shutdown.Handback(
                f"worker stopping: handed back after epoch {reporter.preempted_at}",
                resume=(execution, reporter.preempted_at),
            )
        if before:
            merged = {k: list(before.get(k, [])) + list(v) for k, v in history.history.items()}
            best.append(_best_epoch(_History(merged), study.objective_name, study.direction, initial_epoch))
            continue
        best.append(_best_epoch(history, study.objective_name, study.direction, initial_epoch))
        if reporter.prune_reason is not None:
            return TrialOutcome(
                "pruned",
                metrics=best[0][1],
                best_epoch=best[0][0],
                error=reporter.prune_reason,
                model_path=_save(settings, claim, model, prepared.split),
                environment=environment(trial_seed(study, trial.number, 0)),
            )
    return TrialOutcome(
        "completed",
        metrics=_average([m for _, m in best]),
        best_epoch=best[0][0],
        model_path=_save(settings, claim, model, prepared.split),
        environment=environment(trial_seed(study, trial.number, 0)),
    )


@dataclass(frozen=True)
class _History:
    """A Keras-History-shaped view of stored epochs (what :func:`_best_epoch` reads)."""

    history: dict[str, list[float]]


def _logs_of(epochs: list[Any]) -> dict[str, list[float]]:
    """Stored epochs (in epoch order) as Keras history logs; a metric missing in an epoch reads as NaN."""
    ordered = sorted(epochs, key=lambda e: e.epoch)
    keys = {k for e in ordered for k in e.metrics}
    return {k: [float(e.metrics.get(k, float("nan"))) for e in ordered] for k in keys if k != "learning_rate"}


def _resume_point(trial: Any, checkpoint: Path) -> tuple[int, int] | None:
    """(execution, epoch) to continue a preempted trial from, when its checkpoint is there."""
    if trial.resume_epoch is None or trial.resume_execution is None or not checkpoint.exists():
        return None
    return int(trial.resume_execution), int(trial.resume_epoch)


def _save_preempted(model: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name.replace(".weights.h5", ".tmp.weights.h5"))
    model.save_weights(tmp)
    tmp.replace(path)  # whole or absent: a worker killed while saving leaves the previous checkpoint


def _best_epoch(history: Any, objective: str, direction: str, initial_epoch: int) -> tuple[int, dict[str, float]]:
    logs = history.history
    if objective not in logs:
        raise ValueError(f"objective {objective!r} not among the reported metrics {sorted(logs)}")
    series = np.asarray(logs[objective], dtype=float)
    finite = np.where(np.isfinite(series), series, np.inf if direction == "min" else -np.inf)
    index = int(np.argmin(finite) if direction == "min" else np.argmax(finite))
    return initial_epoch + index, {k: float(v[index]) for k, v in logs.items() if k != "learning_rate"}


def _average(per_execution: list[dict[str, float]]) -> dict[str, float]:
    keys = per_execution[0].keys()
    return {k: float(np.mean([m[k] for m in per_execution])) for k in keys}


def _save(settings: Settings, claim: Claim, model: Any, split: Split) -> str:
    """Save the trained model (.keras) and, for later Hyperband rounds, its weights."""
    study_id = claim.study.id
    ckpt = checkpoint_path(settings, study_id, claim.trial.oracle_trial_id)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(ckpt)
    path = study_dir(settings, study_id) / "models" / f"trial-{claim.trial.number}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    tmp.replace(path)
    return str(path.relative_to(settings.artifacts))
