"""Tests for tuner_service.study.StudySpec: defaults, every validation branch by field path, round trips."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import digits_study
from tuner_service.errors import InvalidInput
from tuner_service.space import SearchSpace
from tuner_service.study import AlgorithmSpec, EarlyStopping, StudySpec, Validation, planned_trials
from tuner_service.task import Objective, TaskSpec

SPACE = {"neurons": {"type": "int", "min": 16, "max": 64}}


def minimal(**overrides: object) -> dict:
    doc: dict = {"name": "m", "dataset": "digits", "task": "multiclass", "search_space": SPACE}
    doc.update(overrides)
    return doc


def without(key: str) -> dict:
    doc = digits_study()
    del doc[key]
    return doc


def fields_of(doc: object, **limits: int) -> list[str]:
    with pytest.raises(InvalidInput) as info:
        StudySpec.from_json(doc, **limits)
    return [e.field for e in info.value.errors]


# --- defaults -------------------------------------------------------------------------------------


def test_defaults_of_a_minimal_study() -> None:
    spec = StudySpec.from_json(minimal(name="  padded  "))
    assert spec.name == "padded"
    assert spec.dataset == "builtin:digits"
    assert spec.task == TaskSpec("multiclass")
    assert spec.objective == Objective("val_accuracy", "max")
    assert spec.search_space == SearchSpace.from_json(SPACE)
    assert spec.algorithm == AlgorithmSpec("random", {})
    assert spec.max_trials == 10
    assert spec.executions_per_trial == 1
    assert spec.parallelism == 1
    assert spec.seed is None
    assert spec.early_stopping == EarlyStopping(patience=3, min_delta=0.0, max_epochs=50, restore_best_weights=True)
    assert spec.validation == Validation(fraction=0.2, seed=0)
    assert spec.priority == "normal"


def test_explicit_values_are_kept() -> None:
    spec = StudySpec.from_json(
        minimal(
            task={"type": "regression", "loss": "huber"},
            dataset="builtin:diabetes",
            objective="val_mae",
            max_trials=7,
            executions_per_trial=2,
            parallelism=3,
            seed=0,
            early_stopping={"patience": 0, "min_delta": 0.5, "max_epochs": 4, "restore_best_weights": False},
            validation={"fraction": 0.5, "seed": 9},
            priority="high",
        )
    )
    assert spec.objective == Objective("val_mae", "min")
    assert (spec.max_trials, spec.executions_per_trial, spec.parallelism, spec.seed) == (7, 2, 3, 0)
    assert spec.early_stopping == EarlyStopping(0, 0.5, 4, False)
    assert spec.validation == Validation(0.5, 9)
    assert spec.priority == "high"
    assert spec.task.loss == "huber"


def test_a_null_seed_means_no_seed() -> None:
    assert StudySpec.from_json(minimal(seed=None)).seed is None


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("digits", "builtin:digits"),
        ("builtin:iris", "builtin:iris"),
        ("sha256:" + "ab" * 32, "sha256:" + "ab" * 32),
        ("12", "12"),
        (12, "12"),
    ],
)
def test_dataset_references(ref: object, expected: str) -> None:
    assert StudySpec.from_json(minimal(dataset=ref)).dataset == expected


# --- algorithm ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["random", "grid", "bayesian"])
def test_algorithm_as_a_string(name: str) -> None:
    assert StudySpec.from_json(minimal(algorithm=name)).algorithm == AlgorithmSpec(name, {})


def test_algorithm_as_an_object_with_options() -> None:
    doc = minimal(algorithm={"name": "bayesian", "num_initial_points": 3, "alpha": 0.001, "beta": 2.6})
    spec = StudySpec.from_json(doc)
    assert spec.algorithm == AlgorithmSpec("bayesian", {"num_initial_points": 3, "alpha": 0.001, "beta": 2.6})
    assert spec.algorithm.to_json() == doc["algorithm"]


def test_algorithm_object_without_a_name_is_random() -> None:
    assert StudySpec.from_json(minimal(algorithm={})).algorithm == AlgorithmSpec("random", {})


@pytest.mark.parametrize(
    ("early_stopping", "max_epochs"),
    [({}, 27), ({"max_epochs": 10}, 10), ({"max_epochs": 27}, 27), ({"max_epochs": 28}, 27), ({"max_epochs": 500}, 27)],
)
def test_hyperband_takes_its_max_epochs_from_early_stopping_capped_at_27(early_stopping, max_epochs) -> None:
    spec = StudySpec.from_json(minimal(algorithm="hyperband", early_stopping=early_stopping))
    assert spec.algorithm.options == {"max_epochs": max_epochs}


def test_hyperband_keeps_an_explicit_max_epochs() -> None:
    doc = minimal(algorithm={"name": "hyperband", "max_epochs": 100, "factor": 4}, early_stopping={"max_epochs": 5})
    assert StudySpec.from_json(doc).algorithm.options == {"max_epochs": 100, "factor": 4}


def test_other_algorithms_get_no_max_epochs() -> None:
    assert StudySpec.from_json(minimal(algorithm="bayesian", early_stopping={"max_epochs": 5})).algorithm.options == {}


# --- every validation branch ----------------------------------------------------------------------

INVALID = [
    # the document and its keys
    pytest.param([], ["body"], id="a-list"),
    pytest.param("study", ["body"], id="a-string"),
    pytest.param(None, ["body"], id="null"),
    pytest.param(minimal(colour="red"), ["colour"], id="unknown-key"),
    # name
    pytest.param(without("name"), ["name"], id="name-missing"),
    pytest.param(minimal(name=5), ["name"], id="name-a-number"),
    pytest.param(minimal(name=""), ["name"], id="name-empty"),
    pytest.param(minimal(name=" \t"), ["name"], id="name-blank"),
    pytest.param(minimal(name="x" * 201), ["name"], id="name-201-chars"),
    # dataset
    pytest.param(without("dataset"), ["dataset"], id="dataset-missing"),
    pytest.param(minimal(dataset=""), ["dataset"], id="dataset-empty"),
    pytest.param(minimal(dataset=True), ["dataset"], id="dataset-a-boolean"),
    pytest.param(minimal(dataset=1.5), ["dataset"], id="dataset-a-float"),
    pytest.param(minimal(dataset=["digits"]), ["dataset"], id="dataset-a-list"),
    # task (a broken task hides the objective, which depends on it)
    pytest.param(without("task"), ["task"], id="task-missing"),
    pytest.param(minimal(task=5), ["task"], id="task-a-number"),
    pytest.param(minimal(task={"type": "ranking"}, objective="val_nonsense"), ["task.type"], id="task-type-unknown"),
    pytest.param(minimal(task={"type": "multiclass", "loss": "huber"}), ["task.loss"], id="task-loss-misfit"),
    pytest.param(minimal(task={"type": "multiclass", "depth": 3}), ["task.depth"], id="task-unknown-key"),
    # objective
    pytest.param(minimal(objective="val_mae"), ["objective.name"], id="objective-not-reported"),
    pytest.param(minimal(objective=5), ["objective"], id="objective-a-number"),
    pytest.param(minimal(objective={"name": "val_loss", "direction": "up"}), ["objective.direction"], id="direction"),
    pytest.param(minimal(objective={"name": "val_loss", "weight": 1}), ["objective.weight"], id="objective-key"),
    # search space
    pytest.param(minimal(search_space="lr"), ["search_space"], id="space-a-string"),
    pytest.param(minimal(search_space={}), ["search_space"], id="space-empty"),
    pytest.param(
        minimal(search_space={"lr": {"type": "float", "min": 1, "max": 0}}), ["search_space.lr.min"], id="space-bounds"
    ),
    # algorithm
    pytest.param(minimal(algorithm=5), ["algorithm"], id="algorithm-a-number"),
    pytest.param(minimal(algorithm=["random"]), ["algorithm"], id="algorithm-a-list"),
    pytest.param(minimal(algorithm="cmaes"), ["algorithm.name"], id="algorithm-unknown-string"),
    pytest.param(minimal(algorithm={"name": "cmaes"}), ["algorithm.name"], id="algorithm-unknown-object"),
    pytest.param(minimal(algorithm={"name": "random", "seed": 1}), ["algorithm.seed"], id="random-has-no-options"),
    pytest.param(
        minimal(algorithm={"name": "hyperband", "max_trials_per_bracket": 3}),
        ["algorithm.max_trials_per_bracket"],
        id="hyperband-unknown-option",
    ),
    pytest.param(minimal(algorithm={"name": "bayesian", "alpha": 2.0}), ["algorithm.alpha"], id="alpha-over-1"),
    pytest.param(minimal(algorithm={"name": "bayesian", "beta": "1"}), ["algorithm.beta"], id="beta-a-string"),
    pytest.param(
        minimal(algorithm={"name": "bayesian", "num_initial_points": 1.5}),
        ["algorithm.num_initial_points"],
        id="initial-points-a-float",
    ),
    pytest.param(minimal(algorithm={"name": "hyperband", "factor": True}), ["algorithm.factor"], id="factor-a-bool"),
    pytest.param(minimal(algorithm={"name": "hyperband", "factor": 11}), ["algorithm.factor"], id="factor-11"),
    pytest.param(minimal(algorithm={"name": "hyperband", "max_epochs": 1}), ["algorithm.max_epochs"], id="epochs-1"),
    pytest.param(
        minimal(algorithm={"name": "hyperband", "hyperband_iterations": 0}),
        ["algorithm.hyperband_iterations"],
        id="iterations-0",
    ),
    # integers
    pytest.param(minimal(max_trials="ten"), ["max_trials"], id="max-trials-a-string"),
    pytest.param(minimal(max_trials=2.0), ["max_trials"], id="max-trials-a-float"),
    pytest.param(minimal(max_trials=True), ["max_trials"], id="max-trials-a-bool"),
    pytest.param(minimal(max_trials=0), ["max_trials"], id="max-trials-0"),
    pytest.param(minimal(max_trials=-5), ["max_trials"], id="max-trials-negative"),
    pytest.param(minimal(max_trials=10_001), ["max_trials"], id="max-trials-over-limit"),
    pytest.param(minimal(executions_per_trial=0), ["executions_per_trial"], id="executions-0"),
    pytest.param(minimal(executions_per_trial=11), ["executions_per_trial"], id="executions-11"),
    pytest.param(minimal(parallelism=0), ["parallelism"], id="parallelism-0"),
    pytest.param(minimal(parallelism=65), ["parallelism"], id="parallelism-65"),
    pytest.param(minimal(parallelism=1.5), ["parallelism"], id="parallelism-a-float"),
    pytest.param(minimal(seed=-1), ["seed"], id="seed-negative"),
    pytest.param(minimal(seed=2**31), ["seed"], id="seed-2-31"),
    pytest.param(minimal(seed="1"), ["seed"], id="seed-a-string"),
    # early stopping
    pytest.param(minimal(early_stopping=3), ["early_stopping"], id="early-a-number"),
    pytest.param(minimal(early_stopping={"patience": -1}), ["early_stopping.patience"], id="patience-negative"),
    pytest.param(minimal(early_stopping={"patience": 1.5}), ["early_stopping.patience"], id="patience-a-float"),
    pytest.param(minimal(early_stopping={"patience": 1001}), ["early_stopping.patience"], id="patience-1001"),
    pytest.param(minimal(early_stopping={"min_delta": -0.1}), ["early_stopping.min_delta"], id="min-delta-negative"),
    pytest.param(minimal(early_stopping={"min_delta": "0"}), ["early_stopping.min_delta"], id="min-delta-a-string"),
    pytest.param(minimal(early_stopping={"min_delta": float("nan")}), ["early_stopping.min_delta"], id="min-delta-nan"),
    pytest.param(minimal(early_stopping={"max_epochs": 0}), ["early_stopping.max_epochs"], id="max-epochs-0"),
    pytest.param(minimal(early_stopping={"max_epochs": 10_001}), ["early_stopping.max_epochs"], id="max-epochs-big"),
    pytest.param(
        minimal(early_stopping={"restore_best_weights": 1}),
        ["early_stopping.restore_best_weights"],
        id="restore-a-number",
    ),
    pytest.param(minimal(early_stopping={"epochs": 5}), ["early_stopping.epochs"], id="early-unknown-option"),
    # validation split
    pytest.param(minimal(validation=0.2), ["validation"], id="validation-a-number"),
    pytest.param(minimal(validation={"fraction": 0.9}), ["validation.fraction"], id="fraction-0.9"),
    pytest.param(minimal(validation={"fraction": 0.01}), ["validation.fraction"], id="fraction-0.01"),
    pytest.param(minimal(validation={"fraction": "0.2"}), ["validation.fraction"], id="fraction-a-string"),
    pytest.param(minimal(validation={"fraction": float("inf")}), ["validation.fraction"], id="fraction-inf"),
    pytest.param(minimal(validation={"seed": -1}), ["validation.seed"], id="validation-seed-negative"),
    pytest.param(minimal(validation={"seed": 1.5}), ["validation.seed"], id="validation-seed-a-float"),
    pytest.param(minimal(validation={"shuffle": True}), ["validation.shuffle"], id="validation-unknown-option"),
    # priority
    pytest.param(minimal(priority="urgent"), ["priority"], id="priority-unknown"),
    pytest.param(minimal(priority=None), ["priority"], id="priority-null"),
    pytest.param(
        minimal(algorithm="hyperband", early_stopping={"max_epochs": "ten"}),
        ["early_stopping.max_epochs"],
        id="hyperband-with-max-epochs-a-string",
    ),
]


@pytest.mark.parametrize(("doc", "fields"), INVALID)
def test_each_problem_is_reported_with_its_field_path(doc: object, fields: list[str]) -> None:
    assert fields_of(doc) == fields


def test_limits_come_from_the_caller() -> None:
    assert fields_of(minimal(max_trials=6), max_trials_limit=5) == ["max_trials"]
    three = {name: {"type": "int", "min": 0, "max": 3} for name in ("a", "b", "c")}
    assert fields_of(minimal(search_space=three), max_parameters=2) == ["search_space"]
    assert StudySpec.from_json(minimal(search_space=three, max_trials=5), max_parameters=3, max_trials_limit=5)


def test_every_problem_is_reported_at_once() -> None:
    doc = {
        "name": "",
        "dataset": None,
        "task": {"type": "binary"},
        "objective": "val_mae",
        "search_space": {"lr": {"type": "float", "min": 1, "max": 0}},
        "algorithm": {"name": "hyperband", "factor": 1},
        "max_trials": 0,
        "executions_per_trial": 0,
        "parallelism": 0,
        "seed": -1,
        "early_stopping": {"patience": -1},
        "validation": {"fraction": 1},
        "priority": "now",
        "extra": 1,
    }
    assert sorted(fields_of(doc)) == sorted(
        [
            "extra",
            "name",
            "dataset",
            "objective.name",
            "search_space.lr.min",
            "algorithm.factor",
            "max_trials",
            "executions_per_trial",
            "parallelism",
            "seed",
            "early_stopping.patience",
            "validation.fraction",
            "priority",
        ]
    )


# --- round trips and budgets ----------------------------------------------------------------------

ROUND_TRIPS = [
    pytest.param(digits_study(), id="digits"),
    pytest.param(minimal(), id="minimal"),
    pytest.param(minimal(algorithm="hyperband", early_stopping={"max_epochs": 9}), id="hyperband-defaulted"),
    pytest.param(
        digits_study(
            dataset="builtin:diabetes",
            task={"type": "regression", "architecture": "wide_deep", "loss": "huber", "output_activation": "softplus"},
            objective={"name": "val_mae"},
            algorithm={"name": "bayesian", "num_initial_points": 2, "alpha": 1e-4, "beta": 2.6},
            executions_per_trial=2,
            parallelism=2,
            validation={"fraction": 0.25, "seed": 3},
            priority="low",
        ),
        id="everything-set",
    ),
]


@pytest.mark.parametrize("doc", ROUND_TRIPS)
def test_to_json_round_trips_through_from_json(doc: dict) -> None:
    original = copy.deepcopy(doc)
    spec = StudySpec.from_json(doc)
    assert doc == original  # the caller's document is not changed
    stored = json.loads(json.dumps(spec.to_json()))  # as it comes back from the database
    again = StudySpec.from_json(stored)
    assert again == spec
    assert again.to_json() == spec.to_json()


@pytest.mark.parametrize(
    ("algorithm", "budget"),
    [
        ({"name": "hyperband", "max_epochs": 9, "factor": 3}, 23),
        ({"name": "hyperband", "max_epochs": 3, "factor": 3}, 6),
        ({"name": "hyperband", "max_epochs": 9, "factor": 3, "hyperband_iterations": 2}, 46),
        ("random", 7),
        ("grid", 7),
        ({"name": "bayesian", "num_initial_points": 2}, 7),
    ],
)
def test_planned_trials(algorithm: object, budget: int) -> None:
    assert planned_trials(StudySpec.from_json(minimal(algorithm=algorithm, max_trials=7))) == budget
