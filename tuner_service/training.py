"""Train one claimed trial: build the model, fit with early stopping, report every epoch, save it.

A promoted ASHA/Hyperband trial continues its parent's training: weights, optimizer state and epoch
counter. It takes the parent's model straight from this process's memory when this worker trained the
parent (see :class:`LiveModels`), and otherwise loads the parent's checkpoint, a full ``.keras`` model
with its optimizer's variables. A trial handed back by a stopping worker resumes the same way, from the
full model its worker saved at the epoch end where it stopped. Imports Keras; only workers import this module.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import random
import threading
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tuner_service import shutdown
from tuner_service.config import Settings
from tuner_service.datasets import DatasetInfo, Split, load_split, output_units
from tuner_service.errors import DatabaseUnavailable
from tuner_service.hypermodel import TARGET_UNITS_LOSS, normalization_stats, target_stats
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
    """The model a promotion continues from: the parent's last state, with its optimizer's variables."""
    return study_dir(settings, study_id) / "checkpoints" / f"{oracle_trial_id}.keras"


def legacy_checkpoint_path(settings: Settings, study_id: int, oracle_trial_id: str) -> Path:
    """Weights only, as trials saved before checkpoints kept the optimizer; still read for such parents."""
    return study_dir(settings, study_id) / "checkpoints" / f"{oracle_trial_id}.weights.h5"


PROMOTING_ALGORITHMS = ("asha", "hyperband")


# Normalization statistics per (data set, split): computed once per worker process, like the split.
_NORM_STATS: dict[tuple[str, float, int], tuple[Any, Any]] = {}


def _norm_stats(info: DatasetInfo, fraction: float, seed: int, split: Split) -> tuple[Any, Any]:
    key = (info.key, fraction, seed)  # the features do not depend on the task type
    if key not in _NORM_STATS:
        _NORM_STATS[key] = normalization_stats(split.x_train)
    return _NORM_STATS[key]


def preempt_checkpoint_path(settings: Settings, study_id: int, trial_id: int) -> Path:
    """Where a preempted trial waits for the worker that resumes it: its model as it was at the epoch end where
    its worker stopped, optimizer state included (a ``.keras`` file)."""
    return study_dir(settings, study_id) / "checkpoints" / f"preempted-{trial_id}.keras"


def legacy_preempt_checkpoint_path(settings: Settings, study_id: int, trial_id: int) -> Path:
    """Weights only, as trials were handed back before the checkpoint kept the optimizer; still resumed from."""
    return study_dir(settings, study_id) / "checkpoints" / f"preempted-{trial_id}.weights.h5"


def preempted_checkpoint(settings: Settings, study_id: int, trial_id: int) -> Path:
    """The checkpoint a preempted trial resumes from: the full model, or an older weights file."""
    path = preempt_checkpoint_path(settings, study_id, trial_id)
    legacy = legacy_preempt_checkpoint_path(settings, study_id, trial_id)
    return legacy if not path.exists() and legacy.exists() else path


class TargetUnitLogs(keras.callbacks.Callback):
    """Reports a scaled-target model's loss in the target's own units, as ``loss`` and ``val_loss``.

    Keras logs the loss it minimises, which is in standardized units under ``task.scale_target``; the model
    also measures the same loss in the target's units (``hypermodel.TARGET_UNITS_LOSS``). This callback
    must come first: Keras hands one logs dict to every callback in turn, so early stopping, the epoch
    reporter and the History all see the rewritten values.
    """

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        for prefix in ("", "val_"):
            value = logs.pop(prefix + TARGET_UNITS_LOSS, None)
            if value is not None:
                logs[prefix + "loss"] = value


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
            legacy_preempt_checkpoint_path(settings, claim.study.id, claim.trial.id).unlink(missing_ok=True)
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
    search_space: dict[str, Any]
    builtin_mlp: bool
    target: tuple[Any, Any] | None = None  # the training target's (mean, std) under task.scale_target

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """Features as the study's hypermodel takes them (image sets as images: a view, not a copy)."""
        return self.runner.inputs(x, self.info.image_shape)

    def hyperparameters(self, values: dict[str, Any]) -> Any:
        """A Keras Tuner ``HyperParameters`` holding one trial's values, for the hypermodel to read."""
        return trial_hyperparameters(self.search_space, values, mlp_domains=self.builtin_mlp)


def prepare(store: Store, settings: Settings, study: StudyRecord) -> Prepared:
    """The study's task, data set, split (cached per worker process), normalization statistics and hypermodel."""
    spec = study.spec
    task = TaskSpec.from_json(spec["task"])
    info = DatasetInfo.from_json(store.get_dataset(study.dataset_id).info)
    validation = spec.get("validation", {})
    fraction, split_seed = validation.get("fraction", 0.2), validation.get("seed", 0)
    split = load_split(info, settings.artifacts, validation_fraction=fraction, seed=split_seed, task_type=task.type)
    norm = _norm_stats(info, fraction, split_seed, split) if task.normalize else None
    builtin_mlp = model_ref(spec).is_builtin_mlp
    # Target scaling is the built-in MLP's: an installed hypermodel builds its own output layer and loss.
    target = target_stats(split.y_train) if task.scale_target and builtin_mlp else None
    runner = runner_for(model_ref(spec).hypermodel, settings.hypermodels)
    shape = tuple(runner.inputs(split.x_train[:1], info.image_shape).shape[1:])
    context = Context(shape, output_units(info, task.type), task, norm, target)
    return Prepared(task, info, split, norm, runner, context, spec["search_space"], builtin_mlp, target)


def freeze_heap() -> None:
    """Exempt what the process holds now (the imported training stack: a few hundred thousand objects) from
    Python's cyclic garbage collector. Each full collection otherwise scans all of it again, and one lands
    every few trials (Keras allocates heavily while it traces a model), costing a worker 0.3-0.8 s of CPU a
    time on this stack; after the freeze it scans only what trials made since. Called once the worker has
    warmed up, when what stays for the process's life is loaded."""
    gc.collect()
    gc.freeze()


def trial_seed(study: StudyRecord, number: int, execution: int) -> int:
    """The seed of one execution of one trial: fixed by the study's seed, so reruns can reproduce it."""
    return ((study.spec.get("seed") or 0) * 1_000_003 + number * 101 + execution) % 2**31


def new_model(prepared: Prepared, values: dict[str, Any]) -> Any:
    """The study's hypermodel freshly built and compiled for ``values``."""
    return prepared.runner.build(prepared.hyperparameters(values), prepared.context)


def load_checkpoint(prepared: Prepared, values: dict[str, Any], path: Path) -> Any:
    """The model a checkpoint holds, optimizer state included; a weights-only (older) checkpoint gets a new
    optimizer, as before."""
    if path.suffix == ".keras":
        return keras.models.load_model(path)
    model = new_model(prepared, values)
    model.load_weights(path)
    return model


def _seed(seed: int, *, continuing: bool) -> None:
    """Seed Python, NumPy and the backend; a model continued in memory keeps TensorFlow's seed, because
    setting it clears TensorFlow's function caches and the model would trace its training step again."""
    if continuing:
        random.seed(seed)
        np.random.seed(seed)
    else:
        keras.utils.set_random_seed(seed)


def fit_once(
    prepared: Prepared,
    study: StudyRecord,
    values: dict[str, Any],
    *,
    seed: int,
    callbacks: list[Any],
    resume_from: Path | None = None,
    model: Any = None,
) -> tuple[Any, Any]:
    """Fit ``model`` (by default: the one ``resume_from`` holds, else the study's hypermodel built for
    ``values``) with the study's early stopping, through the hypermodel's own ``fit`` if it has one;
    returns (model, history). ``callbacks`` run before early stopping, so their ``on_train_end`` sees the
    last epoch's weights, not yet the best ones restored."""
    early = study.spec.get("early_stopping", {})
    _seed(seed, continuing=model is not None)
    hp = prepared.hyperparameters(values)
    if model is None:
        model = new_model(prepared, values) if resume_from is None else load_checkpoint(prepared, values, resume_from)
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
        callbacks=[TargetUnitLogs(), *callbacks, stopper],
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
    resume = resume_source(settings, claim)
    promotable = study.spec["algorithm"]["name"] in PROMOTING_ALGORITHMS
    preempted = preempted_checkpoint(settings, study.id, trial.id)
    resumed = _resume_point(trial, preempted)
    earlier = wait_out(lambda: store.epochs(trial.id), what="reading a resumed trial") if resumed else []
    best: list[tuple[int, dict[str, float]]] = []
    model, last = None, LastState()
    for execution in range(executions):
        if resumed is not None and execution < resumed[0]:
            # Finished before the preemption: its epochs are stored, its model is not needed any more.
            logs = _logs_of([e for e in earlier if e.execution == execution])
            best.append(_best_epoch(_History(logs), study.objective_name, study.direction, initial_epoch))
            continue
        reporter = EpochReporter(store, claim, execution, pruner)
        seed = trial_seed(study, trial.number, execution)
        values, start_from, live, before = claim.values, resume, None, {}
        if resumed is not None and execution == resumed[0]:
            values = {**claim.values, "tuner/initial_epoch": resumed[1]}
            start_from = preempted
            before = _logs_of([e for e in earlier if e.execution == execution and e.epoch < resumed[1]])
            reporter.curve = [None] * initial_epoch + list(before.get(study.objective_name, []))
            log.info("trial %s resumes execution %s at epoch %s", trial.id, execution, resumed[1])
        else:
            # Every execution restarts from the parent, so only a single one may consume the live model.
            live = LIVE_MODELS.take((study.id, claim.resumes), resume) if resume and executions == 1 else None
            if resume is not None:
                source = "memory" if live is not None else f"checkpoint {resume.name}"
                log.info("trial %s continues trial %s from %s", trial.number, claim.resumes, source)
        callbacks = [reporter, last]  # last: where a promotion or a handed-back trial continues from
        model, history = fit_once(
            prepared, study, values, seed=seed, callbacks=callbacks, resume_from=start_from, model=live
        )
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
            _save_preempted(model, last, settings, study.id, trial.id)
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
                model_path=_save(settings, claim, model, last if promotable else None),
                environment=environment(trial_seed(study, trial.number, 0)),
            )
    return TrialOutcome(
        "completed",
        metrics=_average([m for _, m in best]),
        best_epoch=best[0][0],
        model_path=_save(settings, claim, model, last if promotable else None),
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


def _save_preempted(model: Any, last: LastState, settings: Settings, study_id: int, trial_id: int) -> None:
    """Save the model as it was at the epoch end where its worker stopped: that epoch's weights (early stopping
    has restored the best ones by now), the optimizer's state and step count, so that the worker resuming it
    trains on as this one would have (weights alone would restart the optimizer: Adam's moments at zero, a
    schedule back at step 0). Whole or absent: a worker killed while saving leaves the previous checkpoint."""
    if last.weights is not None:
        model.set_weights(last.weights)
    _atomic_save(model, preempt_checkpoint_path(settings, study_id, trial_id))
    legacy_preempt_checkpoint_path(settings, study_id, trial_id).unlink(missing_ok=True)


def resume_source(settings: Settings, claim: Claim) -> Path | None:
    """The checkpoint a promoted trial continues from: the parent's full model, or an older weights file."""
    if claim.resumes is None:
        return None
    path = checkpoint_path(settings, claim.study.id, claim.resumes)
    legacy = legacy_checkpoint_path(settings, claim.study.id, claim.resumes)
    return legacy if not path.exists() and legacy.exists() else path


class LastState(keras.callbacks.Callback):
    """The weights at the end of the last epoch, taken before early stopping restores the best ones: a
    promotion continues the run where it stopped, while the saved model keeps the best epoch's weights."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[Any] | None = None

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.weights = self.model.get_weights()


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class LiveModels:
    """Models this worker process trained, in their last state, kept for the promotions that continue them.

    A promotion claimed by the worker that trained its parent continues the parent's model object: no
    save/reload round trip, and Keras keeps the model's compiled training step. An entry is used only while
    the parent's checkpoint is still the file this process wrote (a parent requeued and retrained elsewhere
    rewrites it); taking an entry removes it, so a child that fails leaves no half-trained model behind.
    Bounded by the parameters held (weights plus optimizer slots), oldest first out.
    """

    def __init__(self, max_parameters: int, max_models: int) -> None:
        self.max_parameters, self.max_models = max_parameters, max_models
        self._entries: OrderedDict[tuple[int, str], tuple[Any, tuple[int, int, int] | None]] = OrderedDict()

    def put(self, key: tuple[int, str], model: Any, checkpoint: Path) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (model, _file_stamp(checkpoint))
        while len(self._entries) > self.max_models or self._parameters() > self.max_parameters:
            self._entries.popitem(last=False)

    def take(self, key: tuple[int, str | None], checkpoint: Path | None) -> Any:
        entry = self._entries.pop(key, None)  # type: ignore[arg-type]
        if entry is None or checkpoint is None:
            return None
        model, stamp = entry
        return model if stamp is not None and stamp == _file_stamp(checkpoint) else None

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _parameters(self) -> int:
        return sum(model.count_params() for model, _ in self._entries.values())


# About 100 MB of float32 weights (three times that with Adam's two moments) per worker process.
LIVE_MODELS = LiveModels(max_parameters=25_000_000, max_models=16)


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


def _save(settings: Settings, claim: Claim, model: Any, last: LastState | None) -> str:
    """Save the trained model (.keras) to download; with ``last``, also the checkpoint a promotion continues
    from (the last epoch's state) and keep the model in this process for it."""
    study_id = claim.study.id
    path = study_dir(settings, study_id) / "models" / f"trial-{claim.trial.number}.keras"
    _atomic_save(model, path)
    if last is not None:
        ckpt = checkpoint_path(settings, study_id, claim.trial.oracle_trial_id)
        if last.weights is None or _same_weights(model.get_weights(), last.weights):
            _atomic_link(path, ckpt)  # the best epoch was the last: one file serves both
        else:
            model.set_weights(last.weights)
            _atomic_save(model, ckpt)
        LIVE_MODELS.put((study_id, claim.trial.oracle_trial_id), model, ckpt)
    return str(path.relative_to(settings.artifacts))


def _same_weights(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _atomic_save(model: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    tmp.replace(path)


def _atomic_link(source: Path, path: Path) -> None:
    """``path`` becomes the same file as ``source`` (a copy where hard links are not allowed)."""
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.keras")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    tmp.replace(path)
