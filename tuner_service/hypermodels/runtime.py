"""Running hypermodels on a worker: load an entry, record its declared space, build and fit it for a trial.

Imports Keras and Keras Tuner; only workers import this module. An entry is a ``build_model(hp)``
function, a ``keras_tuner.HyperModel`` subclass or instance. A function or class that takes
``input_shape``, ``num_outputs``/``num_classes`` or ``task_type`` keyword arguments gets them from the
study's data set, so one hypermodel serves 8x8 and 28x28 images alike; a HyperModel's ``fit`` is used as
Keras Tuner uses it (batch size or preprocessing may be tuned there).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from tuner_service.hypermodels.discovery import Entry, discover
from tuner_service.space import SearchSpace
from tuner_service.task import TaskSpec

CONTEXT_ARGS = ("input_shape", "num_outputs", "num_classes", "task_type")
# The small inputs a hypermodel is built on once at worker start, to record its space and input kinds.
PROBE_SHAPES = {"vectors": (8,), "images": (8, 8, 1)}
PROBE_OUTPUTS = 3
RECORDING_FORMAT = 1  # part of every cached recording's key: bump it when record() changes what it finds
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What a build may depend on besides the hyperparameters: the data's shape and the task."""

    input_shape: tuple[int, ...]
    num_outputs: int
    task: TaskSpec
    norm_stats: tuple[Any, Any] | None = None
    target_stats: tuple[Any, Any] | None = None  # the built-in MLP's target scaling (task.scale_target)

    def kwargs(self) -> dict[str, Any]:
        return {
            "input_shape": self.input_shape,
            "num_outputs": self.num_outputs,
            "num_classes": self.num_outputs,
            "task_type": self.task.type,
        }


class Runner:
    """The interface training uses for every hypermodel, the built-in MLP included."""

    name: str = ""
    declared_space: dict[str, Any] | None = None  # known without building (the MLP); else recorded
    input_kinds: tuple[str, ...] = ()

    def build(self, hp: Any, context: Context) -> Any:
        raise NotImplementedError

    def fit(self, hp: Any, model: Any, x: Any, y: Any, *, context: Context, **kwargs: Any) -> Any:
        return model.fit(x, y, **kwargs)

    def inputs(self, x: np.ndarray, image_shape: tuple[int, ...] | None) -> np.ndarray:
        """The features as this hypermodel takes them: image sets as images (a view, never a copy)."""
        if image_shape:
            return x.reshape(len(x), *image_shape)
        return x


class KerasTunerRunner(Runner):
    """A user's ``build_model(hp)`` function or ``keras_tuner.HyperModel`` class or instance."""

    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self.target = target
        self._instances: dict[tuple[Any, ...], Any] = {}

    def _hypermodel(self, context: Context) -> Any:
        if isinstance(self.target, kt.HyperModel):
            return self.target
        if inspect.isclass(self.target) and issubclass(self.target, kt.HyperModel):
            key = (context.input_shape, context.num_outputs, context.task.type)
            if key not in self._instances:
                self._instances[key] = self.target(**_accepted(self.target, context))
            return self._instances[key]
        return None

    def build(self, hp: Any, context: Context) -> Any:
        hypermodel = self._hypermodel(context)
        if hypermodel is not None:
            return hypermodel.build(hp)
        return self.target(hp, **_accepted(self.target, context))

    def fit(self, hp: Any, model: Any, x: Any, y: Any, *, context: Context, **kwargs: Any) -> Any:
        hypermodel = self._hypermodel(context)
        if hypermodel is not None:
            return hypermodel.fit(hp, model, x, y, **kwargs)
        return model.fit(x, y, **kwargs)

    @property
    def overrides_fit(self) -> bool:
        cls = self.target if inspect.isclass(self.target) else type(self.target)
        return isinstance(cls, type) and issubclass(cls, kt.HyperModel) and cls.fit is not kt.HyperModel.fit


def _accepted(target: Any, context: Context) -> dict[str, Any]:
    """The context keyword arguments ``target`` (a function or class) declares."""
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}
    # Only names the signature spells out: **kwargs usually forwards to HyperModel.__init__, which takes none.
    names = [n for n in CONTEXT_ARGS if n in parameters]
    values = context.kwargs()
    return {n: values[n] for n in names}


def load(entry: Entry) -> Runner:
    """Import the entry's object and wrap it; the built-in MLP is its own runner."""
    module_name, _, attr = entry.target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if inspect.isclass(obj) and issubclass(obj, Runner):
        runner = obj()
        runner.name = entry.name
        return runner
    if not callable(obj) and not isinstance(obj, kt.HyperModel):
        raise TypeError(f"{entry.target} is neither a build_model(hp) function nor a keras_tuner.HyperModel")
    return KerasTunerRunner(entry.name, obj)


@dataclass
class Offer:
    """What a worker announces for one hypermodel: its declared space and the input kinds it builds for."""

    entry: Entry
    search_space: dict[str, Any] = field(default_factory=dict)
    input_kinds: tuple[str, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.entry.name,
            "package": self.entry.package,
            "version": self.entry.version,
            "target": self.entry.target,
            "search_space": self.search_space,
            "input_kinds": list(self.input_kinds),
            "error": self.error,
        }


def record(runner: Runner) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Build the hypermodel once per input kind on a small input with a recording ``HyperParameters``;
    return the parameters its ``hp`` calls declared (our JSON form) and the kinds it built for.

    A second build with every integer at its maximum and every boolean true finds parameters that only
    exist for larger values (``units_{i}`` for each of ``hp.Int("layers")`` layers).
    """
    if runner.declared_space is not None:
        return dict(runner.declared_space), tuple(runner.input_kinds)
    hp = kt.HyperParameters()
    kinds = []
    failures = []
    for kind, shape in PROBE_SHAPES.items():
        context = Context(shape, PROBE_OUTPUTS, TaskSpec("multiclass"))
        try:
            model = _build_probe(runner, hp, context)
            if _input_rank_fits(model, kind):
                kinds.append(kind)
                if isinstance(runner, KerasTunerRunner) and runner.overrides_fit:
                    _fit_probe(runner, hp, model, context)
        except Exception as exc:  # a kind the hypermodel cannot build for is a finding, not a failure
            failures.append(f"{kind}: {type(exc).__name__}: {exc}")
        keras.backend.clear_session()
    if not kinds:
        raise ValueError("builds for neither vectors nor images: " + "; ".join(failures))
    config = hp.get_config()
    config["values"] = {}
    space = SearchSpace.from_json(config, max_parameters=10_000, mlp_domains=False)
    return space.to_json(), tuple(kinds)


def _build_probe(runner: Runner, hp: Any, context: Context) -> Any:
    runner.build(hp, context)
    for p in hp.space:
        kind = type(p).__name__
        if kind == "Int":
            hp.values[p.name] = p.max_value
        elif kind == "Boolean":
            hp.values[p.name] = True
    model = runner.build(hp, context)
    for p in hp.space:
        hp.values[p.name] = p.default
    return model


def _fit_probe(runner: KerasTunerRunner, hp: Any, model: Any, context: Context) -> None:
    """One epoch on a few random rows, so that ``hp`` calls inside an overridden ``fit`` are recorded too."""
    rng = np.random.default_rng(0)
    x = rng.random((8, *context.input_shape), dtype=np.float32)
    y = rng.integers(0, PROBE_OUTPUTS, size=8).astype(np.int32)
    runner.fit(hp, model, x, y, context=context, epochs=1, verbose=0)


def _input_rank_fits(model: Any, kind: str) -> bool:
    inputs = getattr(model, "inputs", None) or []
    outputs = getattr(model, "outputs", None) or []
    if outputs and len(outputs[0].shape) != 2:
        return False  # e.g. Dense layers applied per pixel: it built, but it does not classify images
    if not inputs:
        return True  # a subclassed model without a known input: the build itself is the test
    rank = len(inputs[0].shape)
    return rank == 2 if kind == "vectors" else rank >= 3


def offers(setting: str = "", cache_dir: Path | None = None) -> list[Offer]:
    """Every hypermodel this worker can run, each recorded; one that fails to load is announced with its error.

    With ``cache_dir``, a recording is kept there and reused by later worker starts while the hypermodel's
    name, target, package version and module file are unchanged (recording builds models: seconds a start).
    """
    result = []
    for entry in discover(setting):
        try:
            runner = load(entry)
            space, kinds = _recorded(entry, runner, cache_dir)
            result.append(Offer(entry, space, kinds))
        except Exception as exc:  # a broken package must not stop the worker from offering the others
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            result.append(Offer(entry, error=detail[:2000]))
    return result


def _recorded(entry: Entry, runner: Runner, cache_dir: Path | None) -> tuple[dict[str, Any], tuple[str, ...]]:
    """:func:`record`, through the recording cache when there is one."""
    path = None if cache_dir is None else cache_dir / "hypermodels" / f"{_recording_key(entry)}.json"
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
            return cached["search_space"], tuple(cached["input_kinds"])
        except (ValueError, KeyError, OSError):
            pass  # a damaged cache file is recorded again and replaced
    space, kinds = record(runner)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"search_space": space, "input_kinds": list(kinds)}))
            tmp.replace(path)  # whole or absent: several workers may start together
        except OSError as exc:
            log.warning("could not cache the recording of hypermodel %s: %s", entry.name, exc)
    return space, kinds


def _recording_key(entry: Entry) -> str:
    """What a recording depends on: the entry, its package version and its module file as it is now."""
    module = sys.modules.get(entry.target.split(":", 1)[0])
    source = getattr(module, "__file__", None)
    stamp = None
    if source:
        with contextlib.suppress(OSError):
            info = os.stat(source)
            stamp = [source, info.st_mtime_ns, info.st_size]
    text = json.dumps([RECORDING_FORMAT, entry.name, entry.target, entry.package, entry.version, stamp])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@lru_cache(maxsize=32)
def runner_for(name: str, setting: str = "") -> Runner:
    """The runner of hypermodel ``name`` on this worker (loaded once per process)."""
    for entry in discover(setting):
        if entry.name == name:
            return load(entry)
    raise LookupError(f"hypermodel {name!r} is not installed on this worker")


def trial_hyperparameters(space_json: dict[str, Any], values: dict[str, Any], *, mlp_domains: bool) -> Any:
    """A ``HyperParameters`` holding the study's space with the trial's values, as Keras Tuner hands to build."""
    space = SearchSpace.from_json(space_json, max_parameters=10_000, mlp_domains=mlp_domains)
    hp = kt.HyperParameters.from_config(space.to_keras_tuner_config())
    hp.values.update(values)
    return hp
