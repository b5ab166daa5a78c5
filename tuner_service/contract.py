"""The API's request bodies as pydantic models: the structural contract, written once.

The OpenAPI document's request schemas are generated from these models (``api/openapi.py``), and every
body the API accepts is validated against them after the domain validators (``StudySpec.from_json``,
``SearchSpace``, ``RangeTestSpec``) have run. The domain validators keep their precise messages (every
problem with its field path at once) and the checks a schema cannot express (min below max, a condition's
parent defined earlier, the data set fitting the task); the models add nothing they would let through, so
whatever the document calls invalid, the server refuses too.

Why pydantic v2 rather than a JSON Schema file and a validator: the models are Python types beside the code
that uses them, and their JSON Schema (draft 2020-12, which OpenAPI 3.1 takes as it is) is generated, so it
cannot drift from what is enforced. Fields other branches add (``algorithm: tpe`` with ``initial_points``,
``task.scale_target``, ``model.hypermodel``) are described structurally; their meaning is checked where
they are implemented.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuner_service.errors import FieldError, InvalidInput
from tuner_service.gpu_slots import MAX_GPU_SLOTS
from tuner_service.ids import MAX_ID
from tuner_service.space import KNOWN_ACTIVATIONS, KNOWN_OPTIMIZERS, MAX_CHOICES, MAX_SAFE_INT, SAMPLINGS
from tuner_service.task import ALL_METRICS, ARCHITECTURES, DIRECTIONS, TASK_TYPES

# Deeper documents are no study: refusing them keeps every recursive walk (ours, the JSON encoder's,
# the database driver's) far from Python's recursion limit.
MAX_JSON_DEPTH = 32
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
NON_BLANK = r"\S"

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
SafeInt = Annotated[int, Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Scalar = Annotated[
    bool | Finite | Annotated[str, Field(max_length=200)], Field(description="a number, string or boolean")
]


class Strict(BaseModel):
    """Unknown keys are refused and nothing is coerced (``"3"`` is not 3, ``true`` is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# --- the search space -----------------------------------------------------------------------------------


class Condition(Strict):
    parent: str = Field(pattern=NAME_PATTERN, description="a parameter defined before this one")
    values: list[Scalar] = Field(min_length=1, max_length=MAX_CHOICES)


class _Param(Strict):
    condition: Condition | None = None
    per_layer: bool | None = Field(None, description="neurons only: one width per hidden layer")


class IntParam(_Param):
    type: Literal["int"]
    min: SafeInt
    max: SafeInt
    step: Annotated[int, Field(ge=1, le=MAX_SAFE_INT)] | None = None
    sampling: Literal[tuple(SAMPLINGS)] | None = None  # type: ignore[valid-type]
    default: SafeInt | None = None


class FloatParam(_Param):
    type: Literal["float"]
    min: Finite
    max: Finite
    step: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    sampling: Literal[tuple(SAMPLINGS)] | None = None  # type: ignore[valid-type]
    default: Finite | None = None


class ChoiceParam(_Param):
    type: Literal["choice"]
    values: list[Scalar] = Field(min_length=1, max_length=MAX_CHOICES)
    ordered: bool | None = None
    default: Scalar | None = None


class BooleanParam(_Param):
    type: Literal["boolean"]
    default: bool | None = None


class FixedParam(_Param):
    type: Literal["fixed"]
    value: Scalar


Parameter = Annotated[IntParam | FloatParam | ChoiceParam | BooleanParam | FixedParam, Field(discriminator="type")]


class KerasTunerEntry(Strict):
    class_name: Literal["Int", "Float", "Choice", "Boolean", "Fixed"]
    config: dict[str, Any]


class KerasTunerSpace(Strict):
    """Keras Tuner's ``HyperParameters.get_config()``."""

    space: list[KerasTunerEntry] = Field(min_length=1, max_length=256)
    values: dict[str, Any] | None = None


SearchSpace = Annotated[
    dict[Annotated[str, Field(pattern=NAME_PATTERN)], Parameter] | KerasTunerSpace,
    Field(description="Parameters by name (hidden_layers, neurons, activation, learning_rate, optimizer, momentum, "
          "batch_size, dropout, l2, ...), or Keras Tuner's HyperParameters.get_config() JSON."),
]  # fmt: skip


# --- the rest of a study --------------------------------------------------------------------------------


class Task(Strict):
    type: Literal[TASK_TYPES]  # type: ignore[valid-type]
    architecture: Literal[ARCHITECTURES] | None = None  # type: ignore[valid-type]
    loss: str | None = None
    output_activation: str | None = None
    metrics: list[Literal[ALL_METRICS]] | None = Field(None, max_length=len(ALL_METRICS))  # type: ignore[valid-type]
    normalize: bool | None = None
    scale_target: bool | None = Field(None, description="regression: standardise the target while training")


TaskRef = Annotated[Literal[TASK_TYPES] | Task, Field(description="a task type or a task object")]  # type: ignore[valid-type]


class Objective(Strict):
    name: str = Field(min_length=1, max_length=100)
    direction: Literal[DIRECTIONS] | None = None  # type: ignore[valid-type]


ALGORITHM_NAMES = ("random", "grid", "bayesian", "hyperband", "asha", "tpe")


class Algorithm(Strict):
    """The search algorithm and its options (which options fit which algorithm is checked on submission)."""

    name: Literal[ALGORITHM_NAMES] = "random"  # type: ignore[valid-type]
    num_initial_points: Annotated[int, Field(ge=1, le=1000)] | None = None
    alpha: Annotated[float, Field(ge=0, le=1)] | None = None
    beta: Annotated[float, Field(ge=0, le=100)] | None = None
    max_epochs: Annotated[int, Field(ge=2, le=10_000)] | None = None
    factor: Annotated[int, Field(ge=2, le=10)] | None = None
    hyperband_iterations: Annotated[int, Field(ge=1, le=10)] | None = None
    min_epochs: Annotated[int, Field(ge=1, le=1000)] | None = None
    reduction_factor: Annotated[int, Field(ge=2, le=10)] | None = None
    sampler: Literal["random", "bayesian", "tpe"] | None = None
    initial_points: Annotated[int, Field(ge=1)] | None = None


class EarlyStopping(Strict):
    patience: Annotated[int, Field(ge=0, le=1000)] = 3
    min_delta: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    max_epochs: Annotated[int, Field(ge=1, le=10_000)] = 50
    restore_best_weights: bool = True


class Validation(Strict):
    fraction: Annotated[float, Field(ge=0.05, le=0.5)] = 0.2
    seed: Annotated[int, Field(ge=0, le=MAX_SAFE_INT)] = 0


class Resources(Strict):
    gpu: Annotated[int, Field(ge=0, le=1)] | None = None
    cpu: Annotated[int, Field(ge=0, le=MAX_SAFE_INT)] | None = None
    gpu_slots: Annotated[int, Field(ge=1, le=MAX_GPU_SLOTS)] | None = Field(
        None,
        description="with gpu: 1, how many of a GPU's K slots each trial takes (K: the worker's --per-gpu; "
        "at most K are taken, so K or more runs each trial alone on its GPU); default 1",
    )


class Pruner(Strict):
    name: Literal["none", "median", "asha"] = "none"
    warmup_epochs: Annotated[int, Field(ge=0, le=1000)] | None = None
    min_trials: Annotated[int, Field(ge=1, le=1000)] | None = None
    min_epochs: Annotated[int, Field(ge=1, le=1000)] | None = None
    reduction_factor: Annotated[int, Field(ge=2, le=10)] | None = None


class WarmStart(Strict):
    studies: list[Id] = Field(default_factory=list, max_length=100)


class LearningRateFrom(Strict):
    lr_range_test: Id
    factor: Annotated[float, Field(gt=1, le=1000)] = 10


class Model(Strict):
    hypermodel: str = Field(min_length=1, max_length=100, description="a registered hypermodel's name")
    tune_new_entries: bool = Field(
        True, description="tune the hypermodel's parameters the search space does not name (false: their defaults)"
    )


DatasetRef = Annotated[
    Annotated[str, Field(min_length=1, max_length=200)] | Id,
    Field(description="'digits', 'builtin:NAME', 'sha256:HEX' or a data set id"),
]


class Study(Strict):
    """A study to submit: the search space, task and budget."""

    name: str = Field(min_length=1, max_length=200, pattern=NON_BLANK)
    dataset: DatasetRef
    task: TaskRef
    objective: Annotated[str, Field(min_length=1, max_length=100)] | Objective | None = None
    # Required for the built-in MLP; a named hypermodel declares its own space, which this may narrow.
    search_space: SearchSpace | None = None
    algorithm: Literal[ALGORITHM_NAMES] | Algorithm = "random"  # type: ignore[valid-type]
    max_trials: Annotated[int, Field(ge=1, le=10_000)] = 10
    executions_per_trial: Annotated[int, Field(ge=1, le=10)] = 1
    parallelism: Annotated[int, Field(ge=1, le=64)] = 1
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    validation: Validation = Field(default_factory=Validation)
    priority: Literal["low", "normal", "high"] = "normal"
    resources: Resources = Field(default_factory=lambda: Resources(cpu=1), json_schema_extra={"minProperties": 1})
    pruner: Literal["none", "median", "asha"] | Pruner | None = None
    warm_start: WarmStart | None = None
    learning_rate_from: LearningRateFrom | None = None
    model: Model | None = None


class StudyPatch(Strict):
    """What can change on a running study."""

    priority: Literal["low", "normal", "high"]


class Architecture(Strict):
    """A range test's fixed model."""

    hidden_layers: Annotated[int, Field(ge=0, le=8192)] = 2
    neurons: Annotated[int, Field(ge=1, le=8192)] = 64
    activation: Literal[tuple(sorted(KNOWN_ACTIVATIONS))] = "relu"  # type: ignore[valid-type]
    optimizer: Literal[tuple(sorted(KNOWN_OPTIMIZERS))] = "sgd"  # type: ignore[valid-type]
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=8192)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] | None = None
    l2: Annotated[float, Field(ge=0, lt=10)] | None = None


class RangeTest(Strict):
    """A learning-rate range test to start."""

    dataset: DatasetRef
    task: TaskRef
    architecture: Architecture = Field(default_factory=Architecture)
    min_lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-5
    max_lr: Annotated[float, Field(gt=0, le=1000)] = 10.0
    steps: Annotated[int, Field(ge=20, le=20_000)] = 500
    validation: Validation | None = None
    smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.98
    seed: Annotated[int, Field(ge=0)] = 0


class Rerun(Strict):
    repeats: Annotated[int, Field(ge=1, le=10)] = 3


class NewUser(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=NON_BLANK)
    role: Literal["team_admin", "member", "viewer"] = "member"


class NewToken(Strict):
    user: str = Field(min_length=1, max_length=100)
    label: str | None = Field(None, max_length=200)
    expires_in_days: Annotated[float, Field(gt=0, le=3650)] | None = None


class TooDeep(InvalidInput):
    """A document nested deeper than any body of this API: malformed rather than invalid."""

    status = 400
    title = "Bad request"


def check_document(doc: Any) -> None:
    """Refuse what no field can hold, naming each place: nesting deeper than MAX_JSON_DEPTH (400), and
    strings with a NUL character (PostgreSQL's text cannot store it) or a lone surrogate (not encodable
    as UTF-8, so no database or response could carry it) (422)."""
    errors: list[FieldError] = []
    stack: list[tuple[Any, str, int]] = [(doc, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise TooDeep.one(path or "body", f"is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
        if isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                reason = _text_problem(key)
                if reason:
                    errors.append(FieldError(printable(child), f"has a name that {reason}"))
                stack.append((item, child, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            reason = _text_problem(value)
            if reason:
                errors.append(FieldError(printable(path or "body"), reason))
    if errors:
        raise InvalidInput(sorted(errors, key=lambda e: e.field))


def _text_problem(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not valid Unicode"
    return None


def printable(path: str) -> str:
    """A field path that can itself be sent back in a JSON response."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


REQUEST_MODELS: dict[str, type[Strict]] = {
    model.__name__: model for model in (Study, StudyPatch, RangeTest, Rerun, NewUser, NewToken)
}


def contract_errors(model: type[Strict], doc: object) -> list[FieldError]:
    """Every way ``doc`` breaks the contract, each named by its field path (``search_space.lr.min``)."""
    try:
        model.model_validate(doc)
    except ValidationError as exc:
        found = []
        for error in exc.errors():
            path = _path(doc, error["loc"])
            if path is not None and all(path != f.field for f in found):
                found.append(FieldError(path, _reason(error)))
        return found
    return []


def _path(doc: object, loc: tuple[Any, ...]) -> str | None:
    """Our dotted path from pydantic's location, leaving out the union members it names on the way; None
    for an error of a union member the value was not written as (a string's errors for an object...)."""
    path, node = "", doc
    for part in loc:
        if isinstance(node, dict) and part in node:
            path, node = (f"{path}.{part}" if path else str(part)), node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path, node = f"{path}[{part}]", node[part]
        elif isinstance(part, str) and _is_union_member(part):
            if not _member_fits(part, node):
                return None
        elif isinstance(node, dict) and isinstance(part, str):
            path = f"{path}.{part}" if path else part  # a required field that is missing
            break
    return path or "body"


def _is_union_member(part: str) -> bool:
    scalar = ("str", "int", "float", "bool", "list", "dict", "none")
    prefixes = ("literal[", "constrained-", "function-", "dict[", "list[")
    return part in scalar or part in ("choice", "boolean", "fixed") or part.startswith(prefixes) or part[0].isupper()


def _member_fits(member: str, node: object) -> bool:
    if isinstance(node, dict):
        if node.get("type") == member:  # a discriminated union names the tag it chose
            return True
        keras_tuner = isinstance(node.get("space"), list) and set(node) <= {"space", "values"}
        if member == "KerasTunerSpace":
            return keras_tuner
        if member.startswith("dict["):
            return not keras_tuner
        return member[0].isupper() or member.startswith("dict")
    if isinstance(node, str):
        return member in ("str", "constrained-str") or member.startswith(("literal[", "function-"))
    if isinstance(node, bool):
        return member in ("bool",) or member.startswith("literal[")
    if isinstance(node, int | float):
        return member in ("int", "float", "constrained-int", "constrained-float") or member.startswith("function-")
    return True


def _reason(error: dict[str, Any]) -> str:
    if error["type"] == "missing":
        return "is required"
    if error["type"] == "extra_forbidden":
        return "is not a known field"
    return str(error["msg"]).replace("Input should be", "must be").replace("Value should", "must")
