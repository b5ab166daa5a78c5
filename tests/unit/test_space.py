"""Tests for tuner_service.space: error paths, canonical form, per-layer expansion, Keras Tuner config."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from tuner_service.errors import FieldError, InvalidSearchSpace
from tuner_service.space import (
    KNOWN_OPTIMIZERS,
    Condition,
    Parameter,
    SearchSpace,
)

CLASSIC = {
    "hidden_layers": {"type": "int", "min": 0, "max": 8},
    "neurons": {"type": "int", "min": 16, "max": 256, "sampling": "log"},
    "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
    "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
    "momentum": {
        "type": "float",
        "min": 0.0,
        "max": 0.95,
        "condition": {"parent": "optimizer", "values": ["sgd"]},
    },
    "batch_size": {"type": "choice", "values": [16, 32, 64, 128]},
    "use_bias": {"type": "boolean"},
    "activation": {"type": "fixed", "value": "relu"},
}

OPTIMIZER = {"type": "choice", "values": ["sgd", "adam"]}
HIDDEN = {"type": "int", "min": 1, "max": 3}
PER_LAYER_NEURONS = {"type": "int", "min": 16, "max": 64, "per_layer": True}


def reported(doc: object, **kwargs: object) -> list[FieldError]:
    with pytest.raises(InvalidSearchSpace) as info:
        SearchSpace.from_json(doc, **kwargs)
    return info.value.errors


def paths(doc: object, **kwargs: object) -> list[str]:
    return [e.field for e in reported(doc, **kwargs)]


def as_json(value: object) -> object:
    """What a value looks like after a trip through JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def int_spec(**extra: object) -> dict:
    return {"type": "int", "min": 0, "max": 8} | extra


def float_spec(**extra: object) -> dict:
    return {"type": "float", "min": 0.1, "max": 0.5} | extra


# --- every error case, with the exact paths it must report (after "search_space") -----------------

ERROR_CASES = [
    # the document itself
    pytest.param(["a", "b"], [""], id="not an object"),
    pytest.param({}, [""], id="empty"),
    pytest.param({"1bad": {"type": "boolean"}}, ['["1bad"]'], id="name starts with digit"),
    pytest.param({"a.b": {"type": "boolean"}}, ['["a.b"]'], id="name with a dot"),
    pytest.param({"a" * 65: {"type": "boolean"}}, [f'["{"a" * 65}"]'], id="name too long"),
    pytest.param({"x": 3}, [".x"], id="spec not an object"),
    pytest.param({"x": {"min": 1, "max": 2}}, [".x.type"], id="type missing"),
    pytest.param({"x": {"type": "integer", "min": 1, "max": 2}}, [".x.type"], id="type unknown"),
    pytest.param({"x": {"type": "boolean", "colour": "red"}}, [".x.colour"], id="unknown key"),
    pytest.param({"x": int_spec(values=[1])}, [".x.values"], id="key of another type"),
    # int
    pytest.param({"x": {"type": "int", "max": 3}}, [".x.min"], id="int min missing"),
    pytest.param({"x": int_spec(min=3.0)}, [".x.min"], id="int min is 3.0"),
    pytest.param({"x": int_spec(max=True)}, [".x.max"], id="int max is a bool"),
    pytest.param({"x": int_spec(max="8")}, [".x.max"], id="int max is a string"),
    pytest.param({"x": int_spec(min=8)}, [".x.min"], id="int min equals max"),
    pytest.param({"x": int_spec(min=9)}, [".x.min"], id="int min above max"),
    pytest.param({"x": int_spec(step=0)}, [".x.step"], id="int step zero"),
    pytest.param({"x": int_spec(step=-2)}, [".x.step"], id="int step negative"),
    pytest.param({"x": int_spec(step=1.5)}, [".x.step"], id="int step not integer"),
    pytest.param({"x": int_spec(step=9)}, [".x.step"], id="int step above max-min"),
    pytest.param({"x": int_spec(min=1, sampling="log", step=1)}, [".x.step"], id="int log step 1"),
    pytest.param({"x": int_spec(sampling="log")}, [".x.min"], id="int log min 0"),
    pytest.param({"x": int_spec(sampling="exp")}, [".x.sampling"], id="int sampling unknown"),
    pytest.param({"x": int_spec(default=9)}, [".x.default"], id="int default above max"),
    pytest.param({"x": int_spec(default=2.5)}, [".x.default"], id="int default not integer"),
    # float
    pytest.param({"x": {"type": "float", "max": 1.0}}, [".x.min"], id="float min missing"),
    pytest.param({"x": float_spec(min="0.1")}, [".x.min"], id="float min a string"),
    pytest.param({"x": float_spec(min=float("nan"))}, [".x.min"], id="float min NaN"),
    pytest.param({"x": float_spec(max=float("inf"))}, [".x.max"], id="float max infinite"),
    pytest.param({"x": float_spec(max=10**400)}, [".x.max"], id="float max too large for a float"),
    pytest.param({"x": float_spec(min=0.5)}, [".x.min"], id="float min equals max"),
    pytest.param({"x": float_spec(min=0, sampling="log")}, [".x.min"], id="float log min 0"),
    pytest.param(
        {"x": float_spec(min=-1, sampling="reverse_log")},
        [".x.min"],
        id="float reverse_log min negative",
    ),
    pytest.param({"x": float_spec(step=0)}, [".x.step"], id="float step zero"),
    pytest.param({"x": float_spec(step=-0.1)}, [".x.step"], id="float step negative"),
    pytest.param({"x": float_spec(step=0.5)}, [".x.step"], id="float step above max-min"),
    pytest.param({"x": float_spec(sampling="log", step=0.5)}, [".x.step"], id="float log step not above 1"),
    pytest.param({"x": float_spec(sampling="log", step=10)}, [".x.step"], id="float log step above max/min"),
    pytest.param({"x": float_spec(sampling="exp")}, [".x.sampling"], id="float sampling unknown"),
    pytest.param({"x": float_spec(default=0.0)}, [".x.default"], id="float default below min"),
    pytest.param({"x": float_spec(default=float("nan"))}, [".x.default"], id="float default NaN"),
    # choice
    pytest.param({"x": {"type": "choice"}}, [".x.values"], id="choice values missing"),
    pytest.param({"x": {"type": "choice", "values": "ab"}}, [".x.values"], id="choice values not a list"),
    pytest.param({"x": {"type": "choice", "values": []}}, [".x.values"], id="choice values empty"),
    pytest.param(
        {"x": {"type": "choice", "values": list(range(1001))}},
        [".x.values"],
        id="choice too many values",
    ),
    pytest.param({"x": {"type": "choice", "values": [1, 2, 1]}}, [".x.values[2]"], id="choice duplicate"),
    pytest.param(
        {"x": {"type": "choice", "values": [1, 1.0]}},
        [".x.values[1]"],
        id="choice duplicate 1 and 1.0",
    ),
    pytest.param({"x": {"type": "choice", "values": ["a", 1]}}, [".x.values[1]"], id="choice mixed kinds"),
    pytest.param(
        {"x": {"type": "choice", "values": [1, True]}},
        [".x.values[1]"],
        id="choice bool among ints",
    ),
    pytest.param({"x": {"type": "choice", "values": [[1], 2]}}, [".x.values[0]"], id="choice list entry"),
    pytest.param({"x": {"type": "choice", "values": [1, None]}}, [".x.values[1]"], id="choice null entry"),
    pytest.param(
        {"x": {"type": "choice", "values": [float("nan")]}},
        [".x.values[0]"],
        id="choice NaN entry",
    ),
    pytest.param(
        {"x": {"type": "choice", "values": [1, 2], "default": 3}},
        [".x.default"],
        id="choice default absent",
    ),
    pytest.param(
        {"x": {"type": "choice", "values": [1, 0], "default": True}},
        [".x.default"],
        id="choice default wrong kind",
    ),
    pytest.param(
        {"x": {"type": "choice", "values": ["a"], "ordered": True}},
        [".x.ordered"],
        id="choice ordered strings",
    ),
    pytest.param(
        {"x": {"type": "choice", "values": [1], "ordered": "yes"}},
        [".x.ordered"],
        id="choice ordered not bool",
    ),
    # boolean and fixed
    pytest.param(
        {"x": {"type": "boolean", "default": "yes"}},
        [".x.default"],
        id="boolean default a string",
    ),
    pytest.param({"x": {"type": "fixed"}}, [".x.value"], id="fixed value missing"),
    pytest.param({"x": {"type": "fixed", "value": {"a": 1}}}, [".x.value"], id="fixed value an object"),
    pytest.param({"x": {"type": "fixed", "value": [1]}}, [".x.value"], id="fixed value a list"),
    # names the model builder reads
    pytest.param(
        {"optimizer": {"type": "choice", "values": ["sgd", "adam", "lion"]}},
        [".optimizer.values[2]"],
        id="optimizer unknown",
    ),
    pytest.param(
        {"optimizer": {"type": "fixed", "value": "Adam"}},
        [".optimizer.value"],
        id="optimizer fixed unknown",
    ),
    pytest.param({"optimizer": int_spec()}, [".optimizer.type"], id="optimizer an int"),
    pytest.param({"optimizer": {"type": "boolean"}}, [".optimizer.type"], id="optimizer a boolean"),
    pytest.param(
        {"activation": {"type": "choice", "values": ["relu", "rel"]}},
        [".activation.values[1]"],
        id="activation unknown",
    ),
    pytest.param(
        {"activation": {"type": "fixed", "value": "softmaxx"}},
        [".activation.value"],
        id="activation fixed unknown",
    ),
    pytest.param({"hidden_layers": int_spec(max=65)}, [".hidden_layers.max"], id="hidden_layers above 64"),
    pytest.param({"hidden_layers": int_spec(min=-1)}, [".hidden_layers.min"], id="hidden_layers negative"),
    pytest.param({"hidden_layers": float_spec()}, [".hidden_layers.type"], id="hidden_layers a float"),
    pytest.param(
        {"hidden_layers": {"type": "choice", "values": [1, 2.0]}},
        [".hidden_layers.values[1]"],
        id="hidden_layers choice 2.0",
    ),
    pytest.param({"neurons": int_spec(min=0, max=8)}, [".neurons.min"], id="neurons zero"),
    pytest.param({"neurons": int_spec(min=16, max=9000)}, [".neurons.max"], id="neurons above 8192"),
    pytest.param({"neurons_3": {"type": "fixed", "value": 0}}, [".neurons_3.value"], id="neurons_3 fixed 0"),
    pytest.param(
        {"learning_rate": {"type": "fixed", "value": 0}},
        [".learning_rate.value"],
        id="learning_rate fixed 0",
    ),
    pytest.param(
        {"learning_rate": float_spec(max=11.0)},
        [".learning_rate.max"],
        id="learning_rate above 10",
    ),
    pytest.param(
        {"learning_rate": {"type": "choice", "values": [0.1, -1.0]}},
        [".learning_rate.values[1]"],
        id="learning_rate choice negative",
    ),
    pytest.param(
        {"learning_rate": {"type": "fixed", "value": "0.1"}},
        [".learning_rate.value"],
        id="learning_rate a string",
    ),
    pytest.param(
        {"batch_size": {"type": "choice", "values": [16, 32.5]}},
        [".batch_size.values[1]"],
        id="batch_size 32.5",
    ),
    pytest.param(
        {"batch_size": {"type": "fixed", "value": 32.0}},
        [".batch_size.value"],
        id="batch_size fixed 32.0",
    ),
    pytest.param(
        {"batch_size": int_spec(min=16, max=70000)},
        [".batch_size.max"],
        id="batch_size above 65536",
    ),
    pytest.param({"batch_size": float_spec()}, [".batch_size.type"], id="batch_size a float range"),
    pytest.param({"dropout": float_spec(min=0.0, max=1.0)}, [".dropout.max"], id="dropout max 1"),
    pytest.param({"dropout": float_spec(min=-0.1)}, [".dropout.min"], id="dropout negative"),
    pytest.param({"l2": float_spec(min=-1.0)}, [".l2.min"], id="l2 negative"),
    pytest.param({"momentum": {"type": "fixed", "value": 1}}, [".momentum.value"], id="momentum fixed 1"),
    pytest.param(
        {"momentum": {"type": "choice", "values": [0.9, 1.0]}},
        [".momentum.values[1]"],
        id="momentum choice 1.0",
    ),
    # conditions
    pytest.param(
        {"optimizer": OPTIMIZER, "x": int_spec(condition="sgd")},
        [".x.condition"],
        id="condition not an object",
    ),
    pytest.param(
        {"optimizer": OPTIMIZER, "x": int_spec(condition={"values": ["sgd"]})},
        [".x.condition.parent"],
        id="condition parent missing",
    ),
    pytest.param(
        {"optimizer": OPTIMIZER, "x": int_spec(condition={"parent": 1, "values": [1]})},
        [".x.condition.parent"],
        id="condition parent not a string",
    ),
    pytest.param(
        {"x": int_spec(condition={"parent": "nope", "values": ["a"]})},
        [".x.condition.parent"],
        id="condition parent unknown",
    ),
    pytest.param(
        {"x": int_spec(condition={"parent": "optimizer", "values": ["sgd"]}), "optimizer": OPTIMIZER},
        [".x.condition.parent"],
        id="condition parent after",
    ),
    pytest.param(
        {"x": int_spec(condition={"parent": "x", "values": [1]})},
        [".x.condition.parent"],
        id="condition parent is self",
    ),
    pytest.param(
        {"optimizer": OPTIMIZER, "x": int_spec(condition={"parent": "optimizer"})},
        [".x.condition.values"],
        id="condition values missing",
    ),
    pytest.param(
        {"optimizer": OPTIMIZER, "x": int_spec(condition={"parent": "optimizer", "values": []})},
        [".x.condition.values"],
        id="condition values empty",
    ),
    pytest.param(
        {"optimizer": OPTIMIZER, "x": int_spec(condition={"parent": "optimizer", "values": "sgd"})},
        [".x.condition.values"],
        id="condition values not a list",
    ),
    pytest.param(
        {
            "optimizer": OPTIMIZER,
            "x": int_spec(condition={"parent": "optimizer", "values": ["sgd", "rmsprop"]}),
        },
        [".x.condition.values[1]"],
        id="condition value never taken",
    ),
    pytest.param(
        {"b": {"type": "boolean"}, "x": int_spec(condition={"parent": "b", "values": [1]})},
        [".x.condition.values[0]"],
        id="condition value 1 for a boolean",
    ),
    pytest.param(
        {"h": int_spec(step=2), "x": int_spec(condition={"parent": "h", "values": [3]})},
        [".x.condition.values[0]"],
        id="condition value off an int's step",
    ),
    pytest.param(
        {"r": float_spec(), "x": int_spec(condition={"parent": "r", "values": [0.2, 2.0]})},
        [".x.condition.values[1]"],
        id="condition value outside a float",
    ),
    pytest.param(
        {"u": int_spec(max=100_000), "x": int_spec(condition={"parent": "u", "values": [2.5]})},
        [".x.condition.values[0]"],
        id="condition value 2.5 for a wide int",
    ),
    pytest.param(
        {
            "optimizer": OPTIMIZER,
            "x": int_spec(condition={"parent": "optimizer", "values": ["sgd"], "op": "in"}),
        },
        [".x.condition.op"],
        id="condition unknown key",
    ),
    pytest.param(
        {
            "hidden_layers": HIDDEN,
            "neurons": PER_LAYER_NEURONS,
            "x": int_spec(condition={"parent": "neurons", "values": [16]}),
        },
        [".x.condition.parent"],
        id="condition on per-layer neurons",
    ),
    # per_layer
    pytest.param(
        {"hidden_layers": HIDDEN, "neurons": int_spec(min=16, max=64, per_layer="yes")},
        [".neurons.per_layer"],
        id="per_layer not a bool",
    ),
    pytest.param(
        {"hidden_layers": HIDDEN, "units": float_spec(per_layer=True)},
        [".units.per_layer"],
        id="per_layer on a float",
    ),
    pytest.param(
        {"hidden_layers": HIDDEN, "units": int_spec(min=16, max=64, per_layer=True)},
        [".units.per_layer"],
        id="per_layer on another int",
    ),
    pytest.param(
        {"neurons": PER_LAYER_NEURONS},
        [".neurons.per_layer"],
        id="per_layer without hidden_layers",
    ),
    pytest.param(
        {"neurons": PER_LAYER_NEURONS, "hidden_layers": HIDDEN},
        [".neurons.per_layer"],
        id="per_layer before hidden_layers",
    ),
    pytest.param(
        {"hidden_layers": {"type": "fixed", "value": "two"}, "neurons": PER_LAYER_NEURONS},
        [".hidden_layers.value", ".neurons.per_layer"],
        id="per_layer with string hidden_layers",
    ),
    pytest.param(
        {
            "optimizer": OPTIMIZER,
            "hidden_layers": HIDDEN,
            "neurons": PER_LAYER_NEURONS | {"condition": {"parent": "optimizer", "values": ["sgd"]}},
        },
        [".neurons.condition"],
        id="per_layer with a condition",
    ),
    pytest.param(
        {"hidden_layers": HIDDEN, "neurons_0": int_spec(min=16, max=64), "neurons": PER_LAYER_NEURONS},
        [".neurons.per_layer"],
        id="per_layer expands onto a name",
    ),
    pytest.param(
        {"hidden_layers": HIDDEN, "neurons": PER_LAYER_NEURONS, "neurons_1": int_spec(min=16, max=64)},
        [".neurons_1"],
        id="name taken by a per_layer expansion",
    ),
]


@pytest.mark.parametrize(("doc", "expected"), ERROR_CASES)
def test_each_problem_is_reported_at_its_exact_path(doc: object, expected: list[str]) -> None:
    assert paths(doc) == [f"search_space{suffix}" for suffix in expected]


def test_reasons_are_short_sentences_that_name_the_limit() -> None:
    [error] = reported({"learning_rate": float_spec(min=0.02, max=0.01)})
    assert error == FieldError("search_space.learning_rate.min", "must be less than max (0.01)")


def test_unknown_optimizer_lists_the_known_ones() -> None:
    [error] = reported({"optimizer": {"type": "fixed", "value": "lion"}})
    assert all(name in error.reason for name in KNOWN_OPTIMIZERS)


def test_unknown_key_is_named_in_the_path_and_the_allowed_keys_in_the_reason() -> None:
    [error] = reported({"x": float_spec(colour="red")})
    assert error.field == "search_space.x.colour"
    assert "max, min" in error.reason


def test_too_many_parameters() -> None:
    doc = {f"p{i}": {"type": "boolean"} for i in range(3)}
    assert paths(doc, max_parameters=2) == ["search_space"]
    assert len(SearchSpace.from_json(doc, max_parameters=3)) == 3


def test_too_many_parameters_after_per_layer_expansion() -> None:
    doc = {"hidden_layers": int_spec(), "neurons": PER_LAYER_NEURONS}  # 1 + 8 after expansion
    [error] = reported(doc, max_parameters=8)
    assert error.field == "search_space"
    assert "9" in error.reason
    assert len(SearchSpace.from_json(doc, max_parameters=9)) == 9


def test_field_prefix_is_configurable() -> None:
    assert paths({"x": {"type": "int"}}, field="study.space") == ["study.space.x.min", "study.space.x.max"]


def test_every_problem_is_reported_at_once() -> None:
    doc = {
        "1bad": {"type": "boolean"},
        "learning_rate": {"type": "float", "min": 0.1, "max": 0.01, "sampling": "log", "bogus": 1},
        "optimizer": {"type": "choice", "values": ["sgd", "lion", 3, "sgd"]},
        "momentum": {
            "type": "float",
            "min": 0.0,
            "max": 0.9,
            "condition": {"parent": "optimizer", "values": []},
        },
        "batch_size": {"type": "choice", "values": [16, 32], "default": 64},
        "activation": {"type": "fixed"},
        "dropout": {"type": "float", "min": 0.0, "max": 1.5, "step": -1},
    }
    assert paths(doc) == [
        'search_space["1bad"]',
        "search_space.learning_rate.bogus",
        "search_space.learning_rate.min",
        "search_space.optimizer.values[2]",
        "search_space.optimizer.values[3]",
        "search_space.optimizer.values[1]",
        "search_space.momentum.condition.values",
        "search_space.batch_size.default",
        "search_space.activation.value",
        "search_space.dropout.step",
        "search_space.dropout.max",
    ]


def test_error_is_an_invalid_input_with_field_errors() -> None:
    with pytest.raises(InvalidSearchSpace) as info:
        SearchSpace.from_json({"x": {"type": "int", "min": 1, "max": 0}})
    assert info.value.status == 422
    assert info.value.errors[0].to_dict() == {
        "field": "search_space.x.min",
        "reason": "must be less than max (0)",
    }


# --- valid spaces ---------------------------------------------------------------------------------


def test_classic_space_parses() -> None:
    space = SearchSpace.from_json(CLASSIC)
    assert space.names() == list(CLASSIC)
    assert len(space) == 8
    by_name = {p.name: p for p in space.parameters}
    hidden = Parameter("hidden_layers", "int", min=0, max=8, step=1, sampling="linear")
    assert by_name["hidden_layers"] == hidden
    assert by_name["neurons"] == Parameter("neurons", "int", min=16, max=256, step=None, sampling="log")
    assert by_name["learning_rate"] == Parameter("learning_rate", "float", min=1e-4, max=1e-2, sampling="log")
    assert by_name["optimizer"].values == ("sgd", "adam")
    assert by_name["momentum"].condition == Condition("optimizer", ("sgd",))
    assert by_name["batch_size"].possible_values() == [16, 32, 64, 128]
    assert by_name["use_bias"].possible_values() == [True, False]
    assert by_name["activation"].value == "relu"


def test_canonical_json_round_trips() -> None:
    space = SearchSpace.from_json(CLASSIC)
    canonical = space.to_json()
    assert SearchSpace.from_json(canonical) == space
    assert SearchSpace.from_json(as_json(canonical)) == space
    assert canonical["hidden_layers"] == {"type": "int", "min": 0, "max": 8, "step": 1, "sampling": "linear"}
    assert canonical["momentum"]["condition"] == {"parent": "optimizer", "values": ["sgd"]}


def test_canonical_form_drops_what_keras_tuner_implies() -> None:
    doc = {
        "a": {"type": "float", "min": 0.5, "max": 1, "default": 0.5, "step": None},
        "b": {"type": "choice", "values": [1, 2], "default": 1, "ordered": True},
        "c": {"type": "boolean", "default": False},
        "d": {"type": "choice", "values": ["x", "y"], "default": "y", "ordered": False},
    }
    canonical = SearchSpace.from_json(doc).to_json()
    assert canonical["a"] == {"type": "float", "min": 0.5, "max": 1.0, "sampling": "linear"}
    assert canonical["b"] == {"type": "choice", "values": [1, 2]}
    assert canonical["c"] == {"type": "boolean"}
    assert canonical["d"] == {"type": "choice", "values": ["x", "y"], "default": "y"}


def test_numbers_mixing_ints_and_floats_become_floats() -> None:
    doc = {
        "s": {"type": "choice", "values": [1, 2.5], "default": 1},
        "x": int_spec(condition={"parent": "s", "values": [1]}),
    }
    space = SearchSpace.from_json(doc)
    assert space.parameters[0].values == (1.0, 2.5)
    assert all(isinstance(v, float) for v in space.parameters[0].values)
    assert all(isinstance(v, float) for v in space.parameters[1].condition.values)


def test_per_layer_neurons_expand_with_conditions_on_hidden_layers() -> None:
    space = SearchSpace.from_json(
        {
            "hidden_layers": {"type": "int", "min": 1, "max": 3},
            "neurons": {**PER_LAYER_NEURONS, "sampling": "log"},
        }
    )
    assert space.names() == ["hidden_layers", "neurons_0", "neurons_1", "neurons_2"]
    assert len(space) == 4
    expanded = space.expanded()
    assert [p.condition for p in expanded[1:]] == [
        Condition("hidden_layers", (1, 2, 3)),
        Condition("hidden_layers", (2, 3)),
        Condition("hidden_layers", (3,)),
    ]
    assert all(p.min == 16 and p.max == 64 and p.sampling == "log" and not p.per_layer for p in expanded[1:])
    # The canonical form keeps the user's intent, not the expansion.
    assert space.to_json()["neurons"]["per_layer"] is True
    assert SearchSpace.from_json(space.to_json()) == space


@pytest.mark.parametrize(
    ("hidden", "conditions"),
    [
        ({"type": "choice", "values": [0, 1, 3]}, [(1, 3), (3,), (3,)]),
        ({"type": "fixed", "value": 2}, [(2,), (2,)]),
        ({"type": "int", "min": 0, "max": 4, "step": 2}, [(2, 4), (2, 4), (4,), (4,)]),
        ({"type": "fixed", "value": 0}, []),
    ],
    ids=["choice", "fixed", "int with step", "no layers"],
)
def test_per_layer_conditions_list_only_counts_hidden_layers_can_take(hidden: dict, conditions: list) -> None:
    space = SearchSpace.from_json({"hidden_layers": hidden, "neurons": PER_LAYER_NEURONS})
    assert [p.condition.values for p in space.expanded()[1:]] == conditions


def test_later_parameters_may_depend_on_one_layer() -> None:
    doc = {
        "hidden_layers": HIDDEN,
        "neurons": PER_LAYER_NEURONS,
        "x": int_spec(condition={"parent": "neurons_2", "values": [16]}),
    }
    assert SearchSpace.from_json(doc).names()[-1] == "x"


def test_possible_values() -> None:
    assert Parameter("x", "int", min=1, max=5, step=2, sampling="linear").possible_values() == [1, 3, 5]
    assert Parameter("x", "int", min=2, max=32, step=2, sampling="log").possible_values() == [2, 4, 8, 16, 32]
    assert Parameter("x", "int", min=1, max=4, sampling="log").possible_values() == [1, 2, 3, 4]
    assert Parameter("x", "int", min=0, max=1000, step=1, sampling="linear").possible_values() is None
    assert Parameter("x", "float", min=0.0, max=1.0, sampling="linear").possible_values() is None
    assert Parameter("x", "fixed", value="a").possible_values() == ["a"]


def test_keras_tuner_config_is_emitted_without_keras_tuner() -> None:
    doc = {
        "hidden_layers": {"type": "int", "min": 1, "max": 2},
        "neurons": PER_LAYER_NEURONS,
        "optimizer": OPTIMIZER | {"default": "adam"},
        "momentum": float_spec(condition={"parent": "optimizer", "values": ["sgd"]}),
        "amsgrad": {"type": "boolean", "condition": {"parent": "optimizer", "values": ["adam"]}},
        "shuffle": {"type": "choice", "values": [True, False], "default": False},
    }
    config = SearchSpace.from_json(doc).to_keras_tuner_config()
    assert config["space"][1] == {
        "class_name": "Int",
        "config": {
            "name": "neurons_0",
            "default": None,
            "conditions": [{"class_name": "Parent", "config": {"name": "hidden_layers", "values": [1, 2]}}],
            "min_value": 16,
            "max_value": 64,
            "step": 1,
            "sampling": "linear",
        },
    }
    # Keras Tuner's Choice would turn booleans into 0 and 1.
    assert config["space"][-1] == {
        "class_name": "Boolean",
        "config": {"name": "shuffle", "default": False, "conditions": []},
    }
    # Only parameters active under the defaults get a value, as in Keras Tuner.
    assert config["values"] == {
        "hidden_layers": 1,
        "neurons_0": 16,
        "optimizer": "adam",
        "amsgrad": False,
        "shuffle": False,
    }


def test_space_module_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, tuner_service.space; "
        "print([m for m in ('keras', 'keras_tuner', 'tensorflow', 'numpy', 'flask') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- Keras Tuner's own config ---------------------------------------------------------------------


def kt_entry(class_name: str, **config: object) -> dict:
    return {"class_name": class_name, "config": {"conditions": []} | config}


def parent(name: str, *values: object) -> dict:
    return {"class_name": "Parent", "config": {"name": name, "values": list(values)}}


def test_keras_tuner_form_is_converted_without_keras_tuner() -> None:
    config = {
        "space": [
            kt_entry("Choice", name="optimizer", default="sgd", values=["sgd", "adam"], ordered=False),
            kt_entry(
                "Float",
                name="momentum",
                default=0.0,
                min_value=0.0,
                max_value=0.9,
                step=None,
                sampling="linear",
                conditions=[parent("optimizer", "sgd")],
            ),
        ],
        "values": {"optimizer": "sgd", "momentum": 0.0},
    }
    space = SearchSpace.from_json(config)
    assert space.to_json() == {
        "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
        "momentum": {
            "type": "float",
            "min": 0.0,
            "max": 0.9,
            "sampling": "linear",
            "condition": {"parent": "optimizer", "values": ["sgd"]},
        },
    }
    assert as_json(space.to_keras_tuner_config()) == config


KT_ERROR_CASES = [
    pytest.param(
        [kt_entry("Integer", name="x", min_value=0, max_value=1)],
        [".space[0].class_name"],
        id="class_name unknown",
    ),
    pytest.param([3], [".space[0]"], id="entry not an object"),
    pytest.param([{"class_name": "Int", "config": 3}], [".space[0].config"], id="config not an object"),
    pytest.param([kt_entry("Boolean")], [".space[0].config.name"], id="name missing"),
    pytest.param(
        [
            kt_entry("Boolean", name="a"),
            kt_entry("Boolean", name="b"),
            kt_entry("Boolean", name="c", conditions=[parent("a", True), parent("b", True)]),
        ],
        [".space[2].config.conditions"],
        id="two conditions",
    ),
    pytest.param(
        [
            kt_entry("Boolean", name="a"),
            kt_entry("Boolean", name="b", conditions=[{"class_name": "Other", "config": {}}]),
        ],
        [".space[1].config.conditions[0].class_name"],
        id="condition not Parent",
    ),
    pytest.param(
        [kt_entry("Boolean", name="a"), kt_entry("Boolean", name="a")],
        [".space[1].config.name"],
        id="repeated name",
    ),
    pytest.param(
        [kt_entry("Int", name="x", min_value=5, max_value=1, step=1, sampling="linear")],
        [".x.min"],
        id="bad range",
    ),
    pytest.param([kt_entry("Boolean", name="block/a")], ['["block/a"]'], id="name scope"),
    pytest.param([], [""], id="empty"),
]


@pytest.mark.parametrize(("space", "expected"), KT_ERROR_CASES)
def test_keras_tuner_form_problems_are_reported(space: list, expected: list[str]) -> None:
    assert paths({"space": space, "values": {}}) == [f"search_space{suffix}" for suffix in expected]


# --- round trips through the real keras_tuner, imported lazily: TensorFlow takes seconds to load -


@pytest.fixture
def kt():  # noqa: ANN201 - the module type is only known once imported
    return pytest.importorskip("keras_tuner")


def test_our_space_loads_in_keras_tuner(kt) -> None:  # noqa: ANN001
    doc = CLASSIC | {
        "neurons": {**CLASSIC["neurons"], "per_layer": True},
        "dropout": float_spec(min=0.0, step=0.1),
    }
    space = SearchSpace.from_json(doc)
    config = space.to_keras_tuner_config()

    hp = kt.HyperParameters.from_config(copy.deepcopy(config))

    assert as_json(hp.get_config()) == as_json(config)
    assert [p.name for p in hp.space] == space.names()
    by_name = {p.name: p for p in hp.space}
    assert (by_name["learning_rate"].min_value, by_name["learning_rate"].max_value) == (1e-4, 1e-2)
    assert by_name["learning_rate"].sampling == "log"
    assert by_name["dropout"].step == 0.1
    assert by_name["momentum"].conditions[0].name == "optimizer"
    assert by_name["momentum"].conditions[0].values == ["sgd"]
    assert by_name["neurons_7"].conditions[0].values == [8]
    hp.values["hidden_layers"] = 2
    assert hp.is_active("neurons_1") and not hp.is_active("neurons_2")
    hp.values["optimizer"] = "adam"
    assert not hp.is_active("momentum")


def test_keras_tuner_config_imports_and_round_trips(kt) -> None:  # noqa: ANN001
    hp = kt.HyperParameters()
    hp.Int("hidden_layers", 0, 4)
    hp.Int("units", 16, 256, step=2, sampling="log", default=32)
    hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
    hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.2)
    hp.Choice("optimizer", ["sgd", "adam"], default="adam")
    with hp.conditional_scope("optimizer", ["sgd"]):
        hp.Float("momentum", 0.0, 0.9)
    with hp.conditional_scope("optimizer", ["adam"]):
        hp.Boolean("amsgrad", default=True)
    hp.Choice("batch_size", [16, 32, 64], ordered=False)
    hp.Fixed("activation", "relu")
    config = as_json(hp.get_config())

    space = SearchSpace.from_json(config)

    assert space.names() == [p.name for p in hp.space]
    by_name = {p.name: p for p in space.parameters}
    assert by_name["units"] == Parameter("units", "int", min=16, max=256, step=2, sampling="log", default=32)
    assert by_name["momentum"].condition == Condition("optimizer", ("sgd",))
    assert by_name["amsgrad"].default is True
    assert by_name["batch_size"].ordered is False
    assert as_json(space.to_keras_tuner_config()) == config
    assert SearchSpace.from_json(space.to_json()) == space
