"""What a study learns (the task spec) and what it optimises (the objective); pure Python, no Keras."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuner_service.errors import FieldError, InvalidInput

TASK_TYPES = ("regression", "binary", "multilabel", "multiclass")
ARCHITECTURES = ("sequential", "wide_deep")

# The first loss of each tuple is the default.
LOSSES: dict[str, tuple[str, ...]] = {
    "regression": ("mse", "mae", "huber"),
    "binary": ("binary_crossentropy", "binary_focal_crossentropy"),
    "multilabel": ("binary_crossentropy",),
    "multiclass": ("sparse_categorical_crossentropy", "categorical_crossentropy"),
}

# Multiclass labels are always integer class ids (see datasets.load_split), so every accuracy there is
# computed the sparse way; "accuracy" means the accuracy that fits the task type.
METRICS: dict[str, tuple[str, ...]] = {
    "regression": ("mae", "mse", "rmse", "mape"),
    "binary": ("accuracy", "binary_accuracy", "auc", "precision", "recall"),
    "multilabel": ("binary_accuracy", "auc", "precision", "recall"),
    "multiclass": ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy"),
}
ALL_METRICS = (
    "accuracy",
    "binary_accuracy",
    "categorical_accuracy",
    "sparse_categorical_accuracy",
    "auc",
    "precision",
    "recall",
    "mae",
    "mse",
    "rmse",
    "mape",
)
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "regression": ("mae",),
    "binary": ("accuracy", "auc"),
    "multilabel": ("binary_accuracy",),
    "multiclass": ("accuracy",),
}

# None means a linear output; "linear" is accepted in JSON and stored as None.
REGRESSION_ACTIVATIONS = (None, "relu", "softplus", "sigmoid", "tanh")
FIXED_ACTIVATIONS = {"binary": "sigmoid", "multilabel": "sigmoid", "multiclass": "softmax"}

TASK_KEYS = ("type", "architecture", "loss", "output_activation", "metrics", "normalize", "scale_target")
OBJECTIVE_KEYS = ("name", "direction")
DIRECTIONS = ("min", "max")
_MAXIMISED = ("auc", "precision", "recall", "f1", "f1_score")
# Default objectives in order of preference; the first one the task measures wins.
_DEFAULT_OBJECTIVES = {
    "binary": ("val_accuracy", "val_binary_accuracy", "val_auc"),
    "multiclass": ("val_accuracy", "val_sparse_categorical_accuracy", "val_categorical_accuracy"),
    "multilabel": ("val_binary_accuracy", "val_auc"),
}


@dataclass(frozen=True)
class TaskSpec:
    """The learning problem of a study: task type, model family, loss, output activation and metrics.

    Empty ``loss``/``metrics`` are resolved to the task type's defaults on construction, so every
    instance holds the values actually used. ``scale_target`` (None: on for regression, off otherwise)
    trains a regression model on the standardized target while metrics and the saved model stay in the
    target's own units.
    """

    type: str
    architecture: str = "sequential"
    loss: str = ""
    output_activation: str | None = None
    metrics: tuple[str, ...] = ()
    normalize: bool = True
    scale_target: bool | None = None

    def __post_init__(self) -> None:
        _fill_defaults(self)
        errors = _task_problems(self, "task")
        if errors:
            raise InvalidInput(errors)

    @classmethod
    def from_json(cls, doc: object, *, field: str = "task") -> TaskSpec:
        """Parse the JSON form; a bare string is shorthand for ``{"type": doc}``."""
        if isinstance(doc, str):
            doc = {"type": doc}
        if not isinstance(doc, Mapping):
            raise InvalidInput.one(field, "must be an object with at least a 'type'")
        errors = _unknown_keys(doc, TASK_KEYS, field)
        values = _read_task_fields(doc, field, errors)
        if "type" in values:
            candidate = _unchecked_task(values)
            errors.extend(_task_problems(candidate, field, skip=set(TASK_KEYS) - set(values)))
        if errors:
            raise InvalidInput(errors)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "architecture": self.architecture,
            "loss": self.loss,
            "output_activation": self.output_activation,
            "metrics": list(self.metrics),
            "normalize": self.normalize,
            "scale_target": self.scale_target,
        }

    def metric_names(self) -> list[str]:
        """The keys of a Keras ``History`` for this task: loss, metrics, then their ``val_`` twins."""
        train = ["loss", *self.metrics]
        return train + [f"val_{name}" for name in train]

    def default_objective(self) -> Objective:
        """The objective used when a study names none: the task's accuracy if measured, else val_loss."""
        names = self.metric_names()
        for preferred in _DEFAULT_OBJECTIVES.get(self.type, ()):
            if preferred in names:
                return Objective(preferred, "max")
        return Objective("val_loss", "min")


@dataclass(frozen=True)
class Objective:
    """The History key a study optimises and whether lower or higher is better."""

    name: str
    direction: str

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise InvalidInput.one("objective.direction", f"must be 'min' or 'max', not {self.direction!r}")

    @classmethod
    def from_json(cls, doc: object, task: TaskSpec, *, field: str = "objective") -> Objective:
        """Parse ``None`` (the task's default), a metric name, or ``{"name": ..., "direction": ...}``."""
        if doc is None:
            return task.default_objective()
        if isinstance(doc, str):
            doc = {"name": doc}
        if not isinstance(doc, Mapping):
            raise InvalidInput.one(field, "must be a metric name or an object with 'name' and 'direction'")
        errors = _unknown_keys(doc, OBJECTIVE_KEYS, field)
        name = doc.get("name")
        valid = task.metric_names()
        if not isinstance(name, str) or not name:
            errors.append(FieldError(f"{field}.name", "required: a metric name"))
        elif name not in valid:
            errors.append(
                FieldError(f"{field}.name", f"unknown metric {name!r} for this task; one of: {', '.join(valid)}")
            )
        direction = doc.get("direction")
        if direction is not None and direction not in DIRECTIONS:
            errors.append(FieldError(f"{field}.direction", f"must be 'min' or 'max', not {direction!r}"))
        if errors:
            raise InvalidInput(errors)
        return cls(name, direction or infer_direction(name))

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "direction": self.direction}

    def better(self, a: float, b: float) -> bool:
        """True if score ``a`` is strictly better than ``b``; NaN is worse than any number."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a < b if self.direction == "min" else a > b


def infer_direction(name: str) -> str:
    """Direction a metric is optimised in: accuracies, AUC, precision, recall and F1 up, the rest down."""
    base = name.removeprefix("val_")
    return "max" if base.endswith("accuracy") or base in _MAXIMISED else "min"


def _unknown_keys(doc: Mapping[Any, Any], allowed: tuple[str, ...], field: str) -> list[FieldError]:
    return [
        FieldError(f"{field}.{key}", f"unknown key; allowed: {', '.join(allowed)}") for key in doc if key not in allowed
    ]


def _read_task_fields(doc: Mapping[str, Any], field: str, errors: list[FieldError]) -> dict[str, Any]:
    """Type-check each present field; return those that are well-typed, append errors for the rest."""
    values: dict[str, Any] = {}
    for key in ("type", "architecture", "loss"):
        if key in doc:
            if isinstance(doc[key], str):
                values[key] = doc[key]
            else:
                errors.append(FieldError(f"{field}.{key}", "must be a string"))
    if "type" not in doc:
        errors.append(FieldError(f"{field}.type", f"required; one of: {', '.join(TASK_TYPES)}"))
    if "output_activation" in doc:
        activation = doc["output_activation"]
        if activation is None or isinstance(activation, str):
            values["output_activation"] = activation
        else:
            errors.append(FieldError(f"{field}.output_activation", "must be a string or null"))
    for key in ("normalize", "scale_target"):
        if key in doc:
            if isinstance(doc[key], bool):
                values[key] = doc[key]
            else:
                errors.append(FieldError(f"{field}.{key}", "must be true or false"))
    if "metrics" in doc:
        metrics = _read_metrics(doc["metrics"], f"{field}.metrics", errors)
        if metrics is not None:
            values["metrics"] = metrics
    return values


def _read_metrics(raw: object, field: str, errors: list[FieldError]) -> tuple[str, ...] | None:
    if not isinstance(raw, list):
        errors.append(FieldError(field, "must be a list of metric names"))
        return None
    bad = [FieldError(f"{field}[{i}]", "must be a string") for i, m in enumerate(raw) if not isinstance(m, str)]
    errors.extend(bad)
    return None if bad else tuple(raw)


def _unchecked_task(values: Mapping[str, Any]) -> TaskSpec:
    """A TaskSpec built without validation, so that from_json can collect every problem at once."""
    task = object.__new__(TaskSpec)
    merged = {
        "architecture": "sequential",
        "loss": "",
        "output_activation": None,
        "metrics": (),
        "normalize": True,
        "scale_target": None,
    }
    merged.update(values)
    for key, value in merged.items():
        object.__setattr__(task, key, value)
    _fill_defaults(task)
    return task


def _fill_defaults(task: TaskSpec) -> None:
    """Resolve empty loss/metrics and the output activation; the dataclass is frozen, hence __setattr__."""
    if task.type not in TASK_TYPES:
        return
    object.__setattr__(task, "loss", task.loss or LOSSES[task.type][0])
    object.__setattr__(task, "metrics", tuple(task.metrics) or DEFAULT_METRICS[task.type])
    if task.scale_target is None:
        object.__setattr__(task, "scale_target", task.type == "regression")
    if task.type == "regression" and task.output_activation == "linear":
        object.__setattr__(task, "output_activation", None)
    if task.type in FIXED_ACTIVATIONS and task.output_activation is None:
        object.__setattr__(task, "output_activation", FIXED_ACTIVATIONS[task.type])


def _task_problems(task: TaskSpec, field: str, skip: set[str] | None = None) -> list[FieldError]:
    """Every semantic problem of ``task``; fields in ``skip`` were absent or mistyped and are not judged."""
    skip = skip or set()
    if task.type not in TASK_TYPES:
        return [FieldError(f"{field}.type", f"unknown task type {task.type!r}; one of: {', '.join(TASK_TYPES)}")]
    errors: list[FieldError] = []
    if "architecture" not in skip and task.architecture not in ARCHITECTURES:
        errors.append(
            FieldError(
                f"{field}.architecture",
                f"unknown architecture {task.architecture!r}; one of: {', '.join(ARCHITECTURES)}",
            )
        )
    if "loss" not in skip and task.loss not in LOSSES[task.type]:
        allowed = ", ".join(LOSSES[task.type])
        errors.append(FieldError(f"{field}.loss", f"{task.loss!r} does not fit a {task.type} task; one of: {allowed}"))
    if "output_activation" not in skip:
        errors.extend(_activation_problems(task, f"{field}.output_activation"))
    if "metrics" not in skip:
        errors.extend(_metric_problems(task, f"{field}.metrics"))
    if "scale_target" not in skip and task.scale_target and task.type != "regression":
        errors.append(FieldError(f"{field}.scale_target", f"only a regression target is scaled, not a {task.type} one"))
    return errors


def _activation_problems(task: TaskSpec, field: str) -> list[FieldError]:
    activation = task.output_activation
    if task.type == "regression":
        if activation in REGRESSION_ACTIVATIONS:
            return []
        allowed = ", ".join(a or "linear" for a in REGRESSION_ACTIVATIONS)
        return [FieldError(field, f"unknown output activation {activation!r} for regression; one of: {allowed}")]
    fixed = FIXED_ACTIVATIONS[task.type]
    if activation in (None, fixed):
        return []
    return [FieldError(field, f"a {task.type} task always uses {fixed!r}; got {activation!r}")]


def _metric_problems(task: TaskSpec, field: str) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    allowed = METRICS[task.type]
    for i, metric in enumerate(task.metrics):
        if metric not in ALL_METRICS:
            errors.append(FieldError(f"{field}[{i}]", f"unknown metric {metric!r}; one of: {', '.join(ALL_METRICS)}"))
        elif metric not in allowed:
            reason = f"{metric!r} does not fit a {task.type} task; one of: {', '.join(allowed)}"
            errors.append(FieldError(f"{field}[{i}]", reason))
        elif metric in seen:
            errors.append(FieldError(f"{field}[{i}]", f"{metric!r} is listed twice"))
        seen.add(metric)
    return errors
