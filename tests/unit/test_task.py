"""Tests for tuner_service.task: task spec parsing, defaults, errors and objectives."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tuner_service.errors import InvalidInput
from tuner_service.task import TASK_TYPES, Objective, TaskSpec, infer_direction


def fields_of(exc: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return [e.field for e in exc.value.errors]


# --- defaults --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "loss", "activation", "metrics"),
    [
        ("regression", "mse", None, ("mae",)),
        ("binary", "binary_crossentropy", "sigmoid", ("accuracy", "auc")),
        ("multilabel", "binary_crossentropy", "sigmoid", ("binary_accuracy",)),
        ("multiclass", "sparse_categorical_crossentropy", "softmax", ("accuracy",)),
    ],
)
def test_defaults_are_resolved(kind: str, loss: str, activation: str | None, metrics: tuple[str, ...]) -> None:
    for task in (TaskSpec(kind), TaskSpec.from_json({"type": kind})):
        assert task.loss == loss
        assert task.output_activation == activation
        assert task.metrics == metrics
        assert task.architecture == "sequential"
        assert task.normalize is True


def test_the_target_is_scaled_by_default_for_regression_only() -> None:
    assert TaskSpec.from_json({"type": "regression"}).scale_target is True
    assert TaskSpec.from_json({"type": "regression", "scale_target": False}).scale_target is False
    assert TaskSpec.from_json({"type": "binary"}).scale_target is False
    assert TaskSpec.from_json({"type": "multiclass", "scale_target": False}).scale_target is False
    with pytest.raises(InvalidInput) as exc:
        TaskSpec.from_json({"type": "multiclass", "scale_target": True})
    assert fields_of(exc) == ["task.scale_target"]


def test_string_shorthand() -> None:
    assert TaskSpec.from_json("multiclass") == TaskSpec("multiclass")


def test_json_round_trip() -> None:
    doc = {
        "type": "regression",
        "architecture": "wide_deep",
        "loss": "huber",
        "output_activation": "softplus",
        "metrics": ["mae", "rmse"],
        "normalize": False,
        "scale_target": False,
    }
    task = TaskSpec.from_json(doc)
    assert task.to_json() == doc
    assert TaskSpec.from_json(task.to_json()) == task


def test_linear_means_no_activation() -> None:
    assert TaskSpec.from_json({"type": "regression", "output_activation": "linear"}).output_activation is None


@pytest.mark.parametrize("activation", ["relu", "softplus", "sigmoid", "tanh", None])
def test_regression_activations(activation: str | None) -> None:
    assert TaskSpec.from_json({"type": "regression", "output_activation": activation}).output_activation == activation


def test_fixed_activation_may_be_restated() -> None:
    assert TaskSpec.from_json({"type": "multiclass", "output_activation": "softmax"}).output_activation == "softmax"


def test_metric_names() -> None:
    task = TaskSpec("binary")
    assert task.metric_names() == ["loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"]


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [None, 3, ["regression"], True])
def test_not_an_object(doc: object) -> None:
    with pytest.raises(InvalidInput) as exc:
        TaskSpec.from_json(doc)
    assert fields_of(exc) == ["task"]


def test_field_prefix_is_used() -> None:
    with pytest.raises(InvalidInput) as exc:
        TaskSpec.from_json({"type": "nope"}, field="study.task")
    assert fields_of(exc) == ["study.task.type"]


def test_missing_type() -> None:
    with pytest.raises(InvalidInput) as exc:
        TaskSpec.from_json({})
    assert fields_of(exc) == ["task.type"]


def test_unknown_type_lists_types() -> None:
    with pytest.raises(InvalidInput) as exc:
        TaskSpec.from_json({"type": "ranking"})
    assert fields_of(exc) == ["task.type"]
    assert all(t in exc.value.errors[0].reason for t in TASK_TYPES)


def test_every_problem_is_listed() -> None:
    doc = {
        "type": "multiclass",
        "architecture": "resnet",
        "loss": "mse",
        "output_activation": "relu",
        "metrics": ["accuracy", "mae", "bogus", "accuracy"],
        "normalize": "yes",
        "epochs": 3,
    }
    with pytest.raises(InvalidInput) as exc:
        TaskSpec.from_json(doc)
    assert sorted(fields_of(exc)) == sorted(
        [
            "task.epochs",
            "task.normalize",
            "task.architecture",
            "task.loss",
            "task.output_activation",
            "task.metrics[1]",
            "task.metrics[2]",
            "task.metrics[3]",
        ]
    )


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"type": 1}, "task.type"),
        ({"type": "binary", "loss": 2}, "task.loss"),
        ({"type": "binary", "architecture": None}, "task.architecture"),
        ({"type": "binary", "output_activation": 1}, "task.output_activation"),
        ({"type": "binary", "metrics": "auc"}, "task.metrics"),
        ({"type": "binary", "metrics": ["auc", 3]}, "task.metrics[1]"),
        ({"type": "binary", "normalize": 1}, "task.normalize"),
        ({"type": "regression", "scale_target": "yes"}, "task.scale_target"),
        ({"type": "regression", "scale_target": None}, "task.scale_target"),
    ],
)
def test_wrong_types(doc: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        TaskSpec.from_json(doc)
    assert fields_of(exc) == [field]


@pytest.mark.parametrize(
    ("kind", "loss"),
    [
        ("regression", "binary_crossentropy"),
        ("binary", "mse"),
        ("binary", "sparse_categorical_crossentropy"),
        ("multilabel", "binary_focal_crossentropy"),
        ("multiclass", "binary_crossentropy"),
    ],
)
def test_loss_must_fit_the_task(kind: str, loss: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        TaskSpec.from_json({"type": kind, "loss": loss})
    assert fields_of(exc) == ["task.loss"]


@pytest.mark.parametrize(
    ("kind", "loss"),
    [
        ("regression", "mae"),
        ("regression", "huber"),
        ("binary", "binary_focal_crossentropy"),
        ("multiclass", "categorical_crossentropy"),
    ],
)
def test_allowed_losses(kind: str, loss: str) -> None:
    assert TaskSpec.from_json({"type": kind, "loss": loss}).loss == loss


@pytest.mark.parametrize(
    ("kind", "metric"),
    [
        ("regression", "auc"),
        ("regression", "accuracy"),
        ("multiclass", "mae"),
        ("multiclass", "auc"),
        ("binary", "rmse"),
        ("multilabel", "sparse_categorical_accuracy"),
    ],
)
def test_metric_must_fit_the_task(kind: str, metric: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        TaskSpec.from_json({"type": kind, "metrics": [metric]})
    assert fields_of(exc) == ["task.metrics[0]"]
    assert metric in exc.value.errors[0].reason


@pytest.mark.parametrize(
    ("kind", "activation"),
    [("regression", "softmax"), ("binary", "softmax"), ("binary", "linear"), ("multiclass", "sigmoid")],
)
def test_activation_must_fit_the_task(kind: str, activation: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        TaskSpec.from_json({"type": kind, "output_activation": activation})
    assert fields_of(exc) == ["task.output_activation"]


def test_direct_construction_validates() -> None:
    with pytest.raises(InvalidInput):
        TaskSpec("regression", loss="binary_crossentropy")


# --- objectives ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "direction"),
    [
        ("binary", "val_accuracy", "max"),
        ("multiclass", "val_accuracy", "max"),
        ("multilabel", "val_binary_accuracy", "max"),
        ("regression", "val_loss", "min"),
    ],
)
def test_default_objective(kind: str, name: str, direction: str) -> None:
    task = TaskSpec(kind)
    assert task.default_objective() == Objective(name, direction)
    assert Objective.from_json(None, task) == Objective(name, direction)


def test_default_objective_uses_what_the_task_measures() -> None:
    assert TaskSpec("binary", metrics=("auc",)).default_objective() == Objective("val_auc", "max")
    assert TaskSpec("multiclass", metrics=("categorical_accuracy",)).default_objective().name == (
        "val_categorical_accuracy"
    )
    assert TaskSpec("binary", metrics=("precision",)).default_objective() == Objective("val_loss", "min")


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("val_accuracy", "max"),
        ("val_binary_accuracy", "max"),
        ("accuracy", "max"),
        ("val_auc", "max"),
        ("val_precision", "max"),
        ("recall", "max"),
        ("val_f1", "max"),
        ("val_loss", "min"),
        ("val_mae", "min"),
        ("rmse", "min"),
    ],
)
def test_direction_inference(name: str, direction: str) -> None:
    assert infer_direction(name) == direction


def test_objective_from_string_and_object() -> None:
    task = TaskSpec("binary", metrics=("accuracy", "auc", "precision"))
    assert Objective.from_json("val_auc", task) == Objective("val_auc", "max")
    assert Objective.from_json({"name": "val_precision"}, task) == Objective("val_precision", "max")
    assert Objective.from_json({"name": "val_loss", "direction": "min"}, task).direction == "min"
    assert Objective.from_json({"name": "val_auc", "direction": "min"}, task).direction == "min"
    assert Objective.from_json("val_auc", task).to_json() == {"name": "val_auc", "direction": "max"}


def test_objective_must_be_a_task_metric() -> None:
    task = TaskSpec("regression")
    with pytest.raises(InvalidInput) as exc:
        Objective.from_json("val_accuracy", task)
    assert fields_of(exc) == ["objective.name"]
    assert "val_mae" in exc.value.errors[0].reason and "val_loss" in exc.value.errors[0].reason


@pytest.mark.parametrize(
    ("doc", "fields"),
    [
        (3, ["objective"]),
        ({}, ["objective.name"]),
        ({"name": 5}, ["objective.name"]),
        ({"name": "val_loss", "direction": "up"}, ["objective.direction"]),
        ({"name": "val_loss", "mode": "min"}, ["objective.mode"]),
        ({"name": "nope", "direction": "sideways"}, ["objective.name", "objective.direction"]),
    ],
)
def test_objective_errors(doc: object, fields: list[str]) -> None:
    with pytest.raises(InvalidInput) as exc:
        Objective.from_json(doc, TaskSpec("regression"))
    assert fields_of(exc) == fields


def test_objective_field_prefix() -> None:
    with pytest.raises(InvalidInput) as exc:
        Objective.from_json("x", TaskSpec("regression"), field="study.objective")
    assert fields_of(exc) == ["study.objective.name"]


def test_better() -> None:
    low, high = Objective("val_loss", "min"), Objective("val_accuracy", "max")
    assert low.better(0.1, 0.2) and not low.better(0.2, 0.1) and not low.better(0.1, 0.1)
    assert high.better(0.9, 0.8) and not high.better(0.8, 0.9) and not high.better(0.8, 0.8)
    assert low.better(1.0, math.nan) and not low.better(math.nan, 1.0)
    assert high.better(0.0, math.nan) and not high.better(math.nan, math.nan)


def test_objective_direction_is_checked() -> None:
    with pytest.raises(InvalidInput):
        Objective("val_loss", "down")


# --- import hygiene --------------------------------------------------------------------------------------


def test_api_side_modules_do_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "import tuner_service.task, tuner_service.datasets\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root)
    assert result.returncode == 0, result.stderr
