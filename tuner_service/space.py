"""The hyperparameter search space: validating the JSON a user sends and emitting Keras Tuner's config.

Pure Python on purpose: the API process imports this module and must not pay for TensorFlow, so the
Keras Tuner side is reached only through the JSON that ``keras_tuner.HyperParameters.from_config`` reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from tuner_service.errors import FieldError, InvalidSearchSpace

MAX_LAYERS = 64

# Larger integers lose precision as JSON numbers in most clients and overflow float arithmetic here.
MAX_SAFE_INT = 2**53
SAFE_INT_REASON = f"must be an integer between -{MAX_SAFE_INT} and {MAX_SAFE_INT}"


KNOWN_OPTIMIZERS: frozenset[str] = frozenset(
    {"sgd", "adam", "rmsprop", "adamw", "nadam", "adagrad", "adamax"},
)
KNOWN_ACTIVATIONS: frozenset[str] = frozenset(
    {
        "relu",
        "elu",
        "selu",
        "gelu",
        "tanh",
        "sigmoid",
        "swish",
        "silu",
        "leaky_relu",
        "softplus",
        "linear",
        "mish",
    }
)

TYPES = ("int", "float", "choice", "boolean", "fixed")
SAMPLINGS = ("linear", "log", "reverse_log")
MAX_CHOICES = 1000
MAX_ENUMERATED = 1000

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PER_LAYER_NAME = re.compile(r"neurons_[0-9]+")
_COMMON_KEYS = frozenset({"type", "condition", "per_layer"})
_KEYS = {
    "int": _COMMON_KEYS | {"min", "max", "step", "sampling", "default"},
    "float": _COMMON_KEYS | {"min", "max", "step", "sampling", "default"},
    "choice": _COMMON_KEYS | {"values", "ordered", "default"},
    "boolean": _COMMON_KEYS | {"default"},
    "fixed": _COMMON_KEYS | {"value"},
}
_CONDITION_KEYS = frozenset({"parent", "values"})
_KT_CLASSES = {"Int": "int", "Float": "float", "Choice": "choice", "Boolean": "boolean", "Fixed": "fixed"}
_KT_RENAMES = {"min_value": "min", "max_value": "max"}
_SCALAR_REASON = "must be a number, string or boolean"


@dataclass(frozen=True)
class Condition:
    """A parameter is active only while ``parent`` takes one of ``values``."""

    parent: str
    values: tuple

    def to_json(self) -> dict:
        return {"parent": self.parent, "values": list(self.values)}


@dataclass(frozen=True)
class Parameter:
    """One hyperparameter in canonical form; build it with ``SearchSpace.from_json``, which validates."""

    name: str
    type: str
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    sampling: str | None = None
    values: tuple = ()
    ordered: bool | None = None
    value: object = None
    default: object = None
    per_layer: bool = False
    condition: Condition | None = None

    def to_json(self) -> dict:
        """The spec as a user writes it, without the name (the space is keyed by name)."""
        spec: dict[str, object] = {"type": self.type}
        if self.type in ("int", "float"):
            spec.update(min=self.min, max=self.max)
            if self.step is not None:
                spec["step"] = self.step
            spec["sampling"] = self.sampling
        elif self.type == "choice":
            spec["values"] = list(self.values)
            if self.ordered is not None:
                spec["ordered"] = self.ordered
        elif self.type == "fixed":
            spec["value"] = self.value
        if self.default is not None:
            spec["default"] = self.default
        if self.per_layer:
            spec["per_layer"] = True
        if self.condition is not None:
            spec["condition"] = self.condition.to_json()
        return spec

    def possible_values(self) -> list | None:
        """Every value the parameter can take, or None when there are too many (or infinitely many)."""
        if self.type == "choice":
            return list(self.values)
        if self.type == "boolean":
            return [True, False]
        if self.type == "fixed":
            return [self.value]
        if self.type == "int":
            return _int_values(self)
        return None

    def effective_default(self) -> object:
        """The value Keras Tuner starts from: ``default`` when set, else what Keras Tuner implies."""
        if self.default is not None:
            return float(self.default) if self.type == "float" else self.default
        if self.type == "int":
            return self.min
        if self.type == "float":
            return float(self.min)
        if self.type == "choice":
            return self.values[0]
        if self.type == "boolean":
            return False
        return self.value


@dataclass(frozen=True)
class SearchSpace:
    """An ordered, validated set of parameters; parents always come before their conditional children."""

    parameters: tuple[Parameter, ...]

    @classmethod
    def from_json(
        cls, doc: object, *, field: str = "search_space", max_parameters: int = 64, mlp_domains: bool = True
    ) -> SearchSpace:
        """Parse our JSON form or Keras Tuner's ``get_config()`` form; raise every problem at once.

        ``mlp_domains`` checks the names the built-in MLP reads (optimizer, activation, ...) against what it
        accepts; a space of another hypermodel gives those names its own meaning, so it skips them.
        """
        errors: list[FieldError] = []
        if doc is None:
            errors.append(FieldError(field, "is required: an object of parameters by name"))
        elif _is_keras_tuner_config(doc):
            doc = _from_keras_tuner_config(doc, field, errors)
        parameters = [] if doc is None else _parse_space(doc, field, max_parameters, errors, mlp_domains)
        if errors:
            raise InvalidSearchSpace(errors)
        return cls(tuple(parameters))

    def to_json(self) -> dict:
        """Canonical form: ``SearchSpace.from_json(space.to_json()) == space``."""
        return {p.name: p.to_json() for p in self.parameters}

    def expanded(self) -> tuple[Parameter, ...]:
        """The parameters Keras Tuner sees: a per-layer ``neurons`` becomes ``neurons_0 .. neurons_{L-1}``."""
        result: list[Parameter] = []
        hidden: Parameter | None = None
        for p in self.parameters:
            if p.per_layer and hidden is not None:
                result.extend(_expand_per_layer(p, hidden))
                continue
            if p.name == "hidden_layers":
                hidden = p
            result.append(p)
        return tuple(result)

    def to_keras_tuner_config(self) -> dict:
        """``{"space": [...], "values": {...}}`` exactly as ``keras_tuner.HyperParameters.get_config()``."""
        expanded = self.expanded()
        values: dict[str, object] = {}
        for p in expanded:
            # Keras Tuner gives a value only to parameters active under the defaults before them.
            c = p.condition
            if c is None or (c.parent in values and values[c.parent] in c.values):
                values[p.name] = p.effective_default()
        return {"space": [_keras_tuner_entry(p) for p in expanded], "values": values}

    def names(self) -> list[str]:
        return [p.name for p in self.expanded()]

    def __len__(self) -> int:
        """How many hyperparameters are tuned, counting each per-layer expansion."""
        return len(self.expanded())


# --- parsing our JSON form ------------------------------------------------------------------------


@dataclass
class _Scope:
    """What is defined so far while parsing, so that conditions can only point backwards."""

    declared: dict[str, Parameter | None] = dataclasses.field(default_factory=dict)
    later: set[str] = dataclasses.field(default_factory=set)
    expansions: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    count: int = 0


def _parse_space(
    doc: object, path: str, max_parameters: int, errors: list[FieldError], mlp_domains: bool = True
) -> list[Parameter]:
    if not isinstance(doc, Mapping):
        errors.append(FieldError(path, "must be an object mapping parameter names to their specs"))
        return []
    if not doc:
        errors.append(FieldError(path, "must define at least one parameter"))
        return []
    too_many = len(doc) > max_parameters
    if too_many:
        errors.append(FieldError(path, f"must have at most {max_parameters} parameters (found {len(doc)})"))
    scope = _Scope(later={str(name) for name in doc})
    parameters = []
    for name, spec in doc.items():
        param_path = _param_path(path, name)
        _check_name(name, param_path, errors)
        scope.later.discard(str(name))
        param = _parse_parameter(str(name), spec, param_path, scope, errors, mlp_domains)
        _register(str(name), param, param_path, scope, errors)
        if param is not None:
            parameters.append(param)
    if scope.count > max_parameters and not too_many:
        reason = f"expands per layer to {scope.count} parameters, over the limit of {max_parameters}"
        errors.append(FieldError(path, reason))
    return parameters


def _param_path(path: str, name: object) -> str:
    if isinstance(name, str) and _NAME.fullmatch(name):
        return f"{path}.{name}"
    # A bad name would make a dotted path ambiguous, so quote it.
    return f"{path}[{json.dumps(str(name), ensure_ascii=False)}]"


def _check_name(name: object, path: str, errors: list[FieldError]) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        reason = "must start with a letter or _ and go on with letters, digits or _ (64 at most)"
        errors.append(FieldError(path, reason))


def _parse_parameter(
    name: str,
    spec: object,
    path: str,
    scope: _Scope,
    errors: list[FieldError],
    mlp_domains: bool = True,
) -> Parameter | None:
    if not isinstance(spec, Mapping):
        errors.append(FieldError(path, "must be an object with a type"))
        return None
    kind = _parse_type(spec, path, errors)
    if kind is None:
        return None
    _check_keys(spec, _KEYS[kind], f"{'an' if kind == 'int' else 'a'} {kind} parameter", path, errors)
    param = _TYPE_PARSERS[kind](name, spec, path, errors)
    domain = _domain_for(name) if mlp_domains else None
    if domain is not None:
        if kind not in domain.types():
            reason = f"must be one of {', '.join(domain.types())} for {name}"
            errors.append(FieldError(f"{path}.type", reason))
        else:
            _check_domain_values(kind, spec, domain, path, errors)
    condition = None
    if _given(spec, "condition"):
        condition = _parse_condition(name, spec["condition"], f"{path}.condition", scope, errors)
    per_layer = _parse_per_layer(name, kind, spec, path, scope, errors)
    if param is None:
        return None
    return _normalize(replace(param, condition=condition, per_layer=per_layer))


def _parse_type(spec: Mapping, path: str, errors: list[FieldError]) -> str | None:
    kind = spec.get("type")
    if kind is None:
        errors.append(FieldError(f"{path}.type", f"is required (one of {', '.join(TYPES)})"))
        return None
    if kind not in TYPES:
        errors.append(FieldError(f"{path}.type", f"must be one of {', '.join(TYPES)} (got {_show(kind)})"))
        return None
    return kind


def _check_keys(
    spec: Mapping,
    allowed: frozenset[str],
    what: str,
    path: str,
    errors: list[FieldError],
) -> None:
    for key in spec:
        if key not in allowed:
            reason = f"is not a known key for {what} (allowed: {', '.join(sorted(allowed))})"
            errors.append(FieldError(f"{path}.{key}", reason))


def _register(name: str, param: Parameter | None, path: str, scope: _Scope, errors: list[FieldError]) -> None:
    """Record what later conditions may name; a per-layer ``neurons`` is known only by its expansion."""
    if param is None or not param.per_layer:
        if name in scope.declared:
            errors.append(FieldError(path, "is already defined by the per-layer expansion of neurons"))
        scope.declared[name] = param
        scope.count += 1
        return
    expansion = _expand_per_layer(param, scope.declared["hidden_layers"])
    for p in expansion:
        if p.name in scope.declared:
            errors.append(FieldError(f"{path}.per_layer", f"expands to {p.name}, which is already defined"))
        scope.declared[p.name] = p
    scope.expansions[name] = [p.name for p in expansion]
    scope.count += len(expansion)


# --- one parser per type --------------------------------------------------------------------------


def _parse_int(name: str, spec: Mapping, path: str, errors: list[FieldError]) -> Parameter | None:
    low = _required(spec, "min", path, errors, _is_safe_int, SAFE_INT_REASON)
    high = _required(spec, "max", path, errors, _is_safe_int, SAFE_INT_REASON)
    sampling = _parse_sampling(spec, path, errors)
    if low is None or high is None or not _check_bounds(low, high, sampling, path, errors):
        return None
    step = _parse_step(spec, low, high, sampling, path, errors, integer=True)
    if step is None and sampling == "linear":
        step = 1
    default = _parse_range_default(spec, low, high, path, errors, _is_int, "must be an integer")
    return Parameter(
        name=name, type="int", min=low, max=high, step=step, sampling=sampling or "linear", default=default
    )


def _parse_float(name: str, spec: Mapping, path: str, errors: list[FieldError]) -> Parameter | None:
    low = _required(spec, "min", path, errors, _is_finite_number, "must be a finite number")
    high = _required(spec, "max", path, errors, _is_finite_number, "must be a finite number")
    sampling = _parse_sampling(spec, path, errors)
    if low is None or high is None or not _check_bounds(low, high, sampling, path, errors):
        return None
    step = _parse_step(spec, low, high, sampling, path, errors, integer=False)
    reason = "must be a finite number"
    default = _parse_range_default(spec, low, high, path, errors, _is_finite_number, reason)
    return Parameter(
        name=name,
        type="float",
        min=float(low),
        max=float(high),
        step=None if step is None else float(step),
        sampling=sampling or "linear",
        default=None if default is None else float(default),
    )


def _parse_choice(name: str, spec: Mapping, path: str, errors: list[FieldError]) -> Parameter | None:
    if not _given(spec, "values"):
        errors.append(FieldError(f"{path}.values", "is required"))
        return None
    values = _parse_scalar_list(spec["values"], f"{path}.values", MAX_CHOICES, errors)
    if values is None:
        return None
    ordered = _parse_ordered(spec, values, path, errors)
    default = None
    if _given(spec, "default"):
        default = _find(spec["default"], values)
        if default is None:
            errors.append(FieldError(f"{path}.default", "must be one of the values"))
    if default is not None and _same(default, values[0]):
        default = None  # Keras Tuner starts from the first value anyway; canonical form leaves it out.
    return Parameter(name=name, type="choice", values=values, ordered=ordered, default=default)


def _parse_boolean(name: str, spec: Mapping, path: str, errors: list[FieldError]) -> Parameter | None:
    default = None
    if _given(spec, "default"):
        default = spec["default"]
        if not isinstance(default, bool):
            errors.append(FieldError(f"{path}.default", "must be true or false"))
            default = None
    return Parameter(name=name, type="boolean", default=default or None)


def _parse_fixed(name: str, spec: Mapping, path: str, errors: list[FieldError]) -> Parameter | None:
    if not _given(spec, "value"):
        errors.append(FieldError(f"{path}.value", "is required"))
        return None
    reason = _scalar_problem(spec["value"])
    if reason is not None:
        errors.append(FieldError(f"{path}.value", reason))
        return None
    return Parameter(name=name, type="fixed", value=spec["value"])


_TYPE_PARSERS: dict[str, Callable[[str, Mapping, str, list[FieldError]], Parameter | None]] = {
    "int": _parse_int,
    "float": _parse_float,
    "choice": _parse_choice,
    "boolean": _parse_boolean,
    "fixed": _parse_fixed,
}


# --- field helpers --------------------------------------------------------------------------------


def _given(spec: Mapping, key: str) -> bool:
    """Absent and null both mean "not set": Keras Tuner's config writes null for unset fields."""
    return spec.get(key) is not None


def _required(
    spec: Mapping,
    key: str,
    path: str,
    errors: list[FieldError],
    accept: Callable[[object], bool],
    reason: str,
) -> object:
    if key not in spec:
        errors.append(FieldError(f"{path}.{key}", "is required"))
        return None
    value = spec[key]
    if not accept(value):
        errors.append(FieldError(f"{path}.{key}", reason))
        return None
    return value


def _parse_sampling(spec: Mapping, path: str, errors: list[FieldError]) -> str | None:
    """The sampling, or None when it is invalid (so checks that depend on it are skipped)."""
    if not _given(spec, "sampling"):
        return "linear"
    sampling = spec["sampling"]
    if sampling not in SAMPLINGS:
        errors.append(FieldError(f"{path}.sampling", f"must be one of {', '.join(SAMPLINGS)}"))
        return None
    return sampling


def _check_bounds(low: float, high: float, sampling: str | None, path: str, errors: list[FieldError]) -> bool:
    ok = True
    if low >= high:
        errors.append(FieldError(f"{path}.min", f"must be less than max ({_show(high)})"))
        ok = False
    if sampling in ("log", "reverse_log") and low <= 0:
        errors.append(FieldError(f"{path}.min", f"must be greater than 0 with {sampling} sampling"))
        ok = False
    return ok


def _parse_step(
    spec: Mapping,
    low: float,
    high: float,
    sampling: str | None,
    path: str,
    errors: list[FieldError],
    *,
    integer: bool,
) -> float | int | None:
    if not _given(spec, "step"):
        return None
    step = spec["step"]
    reason = _step_problem(step, low, high, sampling, integer)
    if reason is not None:
        errors.append(FieldError(f"{path}.step", reason))
        return None
    return step


def _step_problem(step: object, low: float, high: float, sampling: str | None, integer: bool) -> str | None:
    if integer and not _is_safe_int(step):
        return SAFE_INT_REASON
    if not _is_finite_number(step):
        return "must be a finite number"
    if step <= 0:
        return "must be greater than 0"
    if sampling == "linear" and step > high - low:
        return f"must not be more than max - min ({_show(high - low)})"
    if sampling in ("log", "reverse_log"):
        # With log sampling Keras Tuner multiplies by the step, so it must grow the value and stay in range.
        if step <= 1:
            return f"must be greater than 1 with {sampling} sampling (it is a multiplier)"
        if step > high / low:
            return f"must not be more than max / min ({_show(high / low)}) with {sampling} sampling"
    return None


def _parse_range_default(
    spec: Mapping,
    low: float,
    high: float,
    path: str,
    errors: list[FieldError],
    accept: Callable[[object], bool],
    reason: str,
) -> float | int | None:
    if not _given(spec, "default"):
        return None
    default = spec["default"]
    if not accept(default):
        errors.append(FieldError(f"{path}.default", reason))
        return None
    if not low <= default <= high:
        reason = f"must be between min ({_show(low)}) and max ({_show(high)})"
        errors.append(FieldError(f"{path}.default", reason))
        return None
    # Keras Tuner starts from min when no default is set; canonical form leaves the redundant one out.
    return None if default == low else default


def _parse_ordered(spec: Mapping, values: tuple, path: str, errors: list[FieldError]) -> bool | None:
    if not _given(spec, "ordered"):
        return None
    ordered = spec["ordered"]
    numeric = _kind(values[0]) == "number"
    if not isinstance(ordered, bool):
        errors.append(FieldError(f"{path}.ordered", "must be true or false"))
        return None
    if ordered and not numeric:
        errors.append(FieldError(f"{path}.ordered", "can only be true when the values are numbers"))
        return None
    # Keras Tuner orders numbers unless told otherwise; keep only a choice that differs from that.
    return None if ordered == numeric else ordered


def _parse_scalar_list(raw: object, path: str, max_len: int, errors: list[FieldError]) -> tuple | None:
    """A non-empty list of distinct scalars of one kind, or None after reporting what is wrong."""
    if not isinstance(raw, list | tuple):
        errors.append(FieldError(path, "must be a list"))
        return None
    if not raw:
        errors.append(FieldError(path, "must not be empty"))
        return None
    if len(raw) > max_len:
        errors.append(FieldError(path, f"must have at most {max_len} entries (found {len(raw)})"))
        return None
    before = len(errors)
    first_kind: str | None = None
    seen: dict[tuple[str, object], int] = {}
    for i, value in enumerate(raw):
        reason = _scalar_problem(value)
        kind = _kind(value)
        if reason is None and first_kind is not None and kind != first_kind:
            reason = f"must be a {first_kind} like the first entry"
        if reason is None and _key(value) in seen:
            reason = f"repeats entry {seen[_key(value)]}"
        if reason is not None:
            errors.append(FieldError(f"{path}[{i}]", reason))
            continue
        first_kind = first_kind or kind
        seen[_key(value)] = i
    return tuple(raw) if len(errors) == before else None


def _normalize(param: Parameter) -> Parameter:
    """Keras Tuner needs one Python type per list; numbers mixing ints and floats become floats."""
    if param.type == "choice":
        values = _unify_numbers(param.values)
        default = param.default
        if default is not None and isinstance(values[0], float):
            default = float(default)
        param = replace(param, values=values, default=default)
    if param.condition is not None:
        condition = replace(param.condition, values=_unify_numbers(param.condition.values))
        param = replace(param, condition=condition)
    return param


def _unify_numbers(values: tuple) -> tuple:
    if _kind(values[0]) == "number" and any(isinstance(v, float) for v in values):
        return tuple(float(v) for v in values)
    return values


# --- conditions and per-layer expansion -----------------------------------------------------------


def _parse_condition(
    name: str,
    raw: object,
    path: str,
    scope: _Scope,
    errors: list[FieldError],
) -> Condition | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, "must be an object with parent and values"))
        return None
    _check_keys(raw, _CONDITION_KEYS, "a condition", path, errors)
    parent = _parse_parent(name, raw.get("parent"), f"{path}.parent", scope, errors)
    values = None
    if not _given(raw, "values"):
        errors.append(FieldError(f"{path}.values", "is required"))
    else:
        values = _parse_scalar_list(raw["values"], f"{path}.values", MAX_CHOICES, errors)
    if parent is None or values is None:
        return None
    parent_param = scope.declared[parent]
    if parent_param is not None:
        _check_reachable(parent_param, values, f"{path}.values", errors)
        if _takes_floats(parent_param):
            # Match the parent's type, so the canonical form shows 1.0 where the parent takes 1.0.
            values = tuple(float(v) if _is_number(v) else v for v in values)
    return Condition(parent=parent, values=values)


def _takes_floats(p: Parameter) -> bool:
    return p.type == "float" or isinstance(p.values[0] if p.values else p.value, float)


def _parse_parent(
    name: str,
    parent: object,
    path: str,
    scope: _Scope,
    errors: list[FieldError],
) -> str | None:
    reason = None
    if parent is None:
        reason = "is required"
    elif not isinstance(parent, str):
        reason = "must be the name of a parameter"
    elif parent == name:
        reason = "must name another parameter, not this one"
    elif parent in scope.expansions:
        names = ", ".join(scope.expansions[parent]) or "none, as hidden_layers is always 0"
        reason = f"{parent} is expanded per layer; name one of its layers ({names})"
    elif parent in scope.later:
        reason = f"must be defined before {name} ({parent} comes after it)"
    elif parent not in scope.declared:
        reason = f"must name a parameter defined before {name}"
    if reason is not None:
        errors.append(FieldError(path, reason))
        return None
    return parent


def _check_reachable(parent: Parameter, values: tuple, path: str, errors: list[FieldError]) -> None:
    """Flag condition values the parent can never take, which would make the child dead."""
    possible = parent.possible_values()
    keys = None if possible is None else {_key(v) for v in possible}
    for i, value in enumerate(values):
        if keys is not None:
            reachable = _key(value) in keys
        else:
            reachable = _is_number(value) and parent.min <= value <= parent.max
            reachable = reachable and (parent.type != "int" or _is_int(value))
        if not reachable:
            errors.append(FieldError(f"{path}[{i}]", f"is not a value {parent.name} can take"))


def _parse_per_layer(
    name: str,
    kind: str,
    spec: Mapping,
    path: str,
    scope: _Scope,
    errors: list[FieldError],
) -> bool:
    raw = spec.get("per_layer")
    if raw is None or raw is False:
        return False
    reason = None
    if not isinstance(raw, bool):
        reason = "must be true or false"
    elif kind != "int" or name != "neurons":
        reason = "is only allowed on the int parameter neurons"
    elif "hidden_layers" not in scope.declared:
        reason = f"needs an int, a choice of integers or a fixed integer hidden_layers defined before {name}"
    elif scope.declared["hidden_layers"] is None:
        return False  # hidden_layers is broken and already reported
    elif _layer_counts(scope.declared["hidden_layers"]) is None:
        reason = "needs hidden_layers to be an int, a choice of integers or a fixed integer"
    if reason is not None:
        errors.append(FieldError(f"{path}.per_layer", reason))
        return False
    if _given(spec, "condition"):
        # Each layer's neurons_i is already conditional on hidden_layers, and only one condition is supported.
        errors.append(FieldError(f"{path}.condition", "cannot be combined with per_layer"))
        return False
    return True


def _layer_counts(hidden: Parameter) -> list[int] | None:
    """The sorted layer counts hidden_layers can take, or None when it is not a usable count."""
    possible = hidden.possible_values()
    if possible is None or hidden.type == "boolean" or not all(_is_int(v) for v in possible):
        return None
    if max(possible, default=0) > MAX_LAYERS:  # reported by the domain check; expanding would take forever
        return None
    return sorted(set(possible))


def _expand_per_layer(neurons: Parameter, hidden: Parameter) -> list[Parameter]:
    counts = _layer_counts(hidden) or [0]
    return [
        replace(
            neurons,
            name=f"{neurons.name}_{i}",
            per_layer=False,
            condition=Condition(parent=hidden.name, values=tuple(c for c in counts if c > i)),
        )
        for i in range(max(counts))
    ]


# --- domain checks for the names the model builder reads ------------------------------------------


@dataclass(frozen=True)
class _Domain:
    """What the model builder accepts for one name it reads: a set of names or a numeric range."""

    names: frozenset[str] | None = None
    what: str = ""
    integer: bool = False
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False

    def types(self) -> tuple[str, ...]:
        if self.names is not None:
            return ("choice", "fixed")
        return ("int", "choice", "fixed") if self.integer else ("int", "float", "choice", "fixed")

    def problem(self, value: object) -> str | None:
        if self.names is not None:
            if isinstance(value, str) and value in self.names:
                return None
            return f"must be one of the known {self.what}: {', '.join(sorted(self.names))}"
        if not _is_number(value):
            return "must be a number"
        if self.integer and not _is_int(value):
            return "must be an integer"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'greater than' if self.low_open else 'at least'} {_show(self.low)}"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return f"must be {'less than' if self.high_open else 'at most'} {_show(self.high)}"
        return None


_DOMAINS = {
    "optimizer": _Domain(names=KNOWN_OPTIMIZERS, what="optimizers"),
    "activation": _Domain(names=KNOWN_ACTIVATIONS, what="activations"),
    "hidden_layers": _Domain(integer=True, low=0, high=MAX_LAYERS),
    "neurons": _Domain(integer=True, low=1, high=8192),
    "learning_rate": _Domain(low=0, low_open=True, high=10),
    "batch_size": _Domain(integer=True, low=1, high=65536),
    "dropout": _Domain(low=0, high=1, high_open=True),
    "l2": _Domain(low=0),
    "momentum": _Domain(low=0, high=1, high_open=True),
}


def _domain_for(name: str) -> _Domain | None:
    if _PER_LAYER_NAME.fullmatch(name):
        return _DOMAINS["neurons"]
    return _DOMAINS.get(name)


def _check_domain_values(
    kind: str,
    spec: Mapping,
    domain: _Domain,
    path: str,
    errors: list[FieldError],
) -> None:
    """Check the raw values, so one bad entry does not hide another; a field already reported is skipped."""
    if kind in ("int", "float"):
        candidates = [(f"{path}.{key}", spec[key]) for key in ("min", "max") if key in spec]
    elif kind == "choice" and _is_short_list(spec.get("values")):
        candidates = [(f"{path}.values[{i}]", v) for i, v in enumerate(spec["values"])]
    elif kind == "fixed" and "value" in spec:
        candidates = [(f"{path}.value", spec["value"])]
    else:
        return
    reported = {e.field for e in errors}
    for candidate_path, value in candidates:
        reason = domain.problem(value)
        if reason is not None and candidate_path not in reported:
            errors.append(FieldError(candidate_path, reason))


# --- Keras Tuner's config -------------------------------------------------------------------------


def _keras_tuner_entry(p: Parameter) -> dict:
    conditions = []
    if p.condition is not None:
        config = {"name": p.condition.parent, "values": list(p.condition.values)}
        conditions.append({"class_name": "Parent", "config": config})
    head = {"name": p.name, "default": p.effective_default(), "conditions": conditions}
    if p.type == "int":
        # Int is the one class whose config keeps the default unresolved (null when unset).
        head["default"] = p.default
        body = {"min_value": p.min, "max_value": p.max, "step": p.step, "sampling": p.sampling}
        return {"class_name": "Int", "config": head | body}
    if p.type == "float":
        body = {"min_value": float(p.min), "max_value": float(p.max), "step": p.step, "sampling": p.sampling}
        return {"class_name": "Float", "config": head | body}
    if p.type == "choice" and _kind(p.values[0]) == "boolean":
        # Keras Tuner's Choice turns booleans into 0 and 1, so they go out as Boolean or Fixed instead.
        if len(p.values) == 2:
            return {"class_name": "Boolean", "config": head}
        return {
            "class_name": "Fixed",
            "config": {"name": p.name, "conditions": conditions, "value": p.values[0]},
        }
    if p.type == "choice":
        ordered = p.ordered if p.ordered is not None else _kind(p.values[0]) == "number"
        return {"class_name": "Choice", "config": head | {"values": list(p.values), "ordered": ordered}}
    if p.type == "boolean":
        return {"class_name": "Boolean", "config": head}
    return {"class_name": "Fixed", "config": {"name": p.name, "conditions": conditions, "value": p.value}}


def _is_keras_tuner_config(doc: object) -> bool:
    return isinstance(doc, Mapping) and isinstance(doc.get("space"), list) and set(doc) <= {"space", "values"}


def _from_keras_tuner_config(doc: Mapping, path: str, errors: list[FieldError]) -> dict | None:
    """Rewrite Keras Tuner's list of classes into our form; ``values`` are current values, not the space."""
    specs: dict[str, dict] = {}
    before = len(errors)
    for i, entry in enumerate(doc["space"]):
        entry_path = f"{path}.space[{i}]"
        converted = _from_keras_tuner_entry(entry, entry_path, errors)
        if converted is None:
            continue
        name, spec = converted
        if name in specs:
            # Keras Tuner allows one name under different conditions; our space is keyed by name.
            reason = f"repeats {_show(name)}; names must be unique"
            errors.append(FieldError(f"{entry_path}.config.name", reason))
            continue
        specs[name] = spec
    return None if not specs and len(errors) > before else specs


def _from_keras_tuner_entry(entry: object, path: str, errors: list[FieldError]) -> tuple[str, dict] | None:
    if not isinstance(entry, Mapping):
        errors.append(FieldError(path, "must be an object with class_name and config"))
        return None
    kind = _KT_CLASSES.get(entry.get("class_name")) if isinstance(entry.get("class_name"), str) else None
    if kind is None:
        errors.append(FieldError(f"{path}.class_name", f"must be one of {', '.join(_KT_CLASSES)}"))
    config = entry.get("config")
    if not isinstance(config, Mapping):
        errors.append(FieldError(f"{path}.config", "must be an object"))
        return None
    name = config.get("name")
    if not isinstance(name, str):
        errors.append(FieldError(f"{path}.config.name", "must be a string"))
        return None
    if kind is None:
        return None
    spec: dict[str, object] = {"type": kind}
    for key, value in config.items():
        if key == "conditions":
            condition = _from_keras_tuner_conditions(value, f"{path}.config.conditions", errors)
            if condition is not None:
                spec["condition"] = condition
        elif key != "name" and value is not None:
            spec[_KT_RENAMES.get(key, key)] = value
    return name, spec


def _from_keras_tuner_conditions(raw: object, path: str, errors: list[FieldError]) -> dict | None:
    if not isinstance(raw, list):
        errors.append(FieldError(path, "must be a list"))
        return None
    if len(raw) > 1:
        errors.append(FieldError(path, f"only one condition is supported (found {len(raw)})"))
        return None
    if not raw:
        return None
    entry = raw[0]
    if not isinstance(entry, Mapping) or entry.get("class_name") != "Parent":
        errors.append(FieldError(f"{path}[0].class_name", "must be Parent"))
        return None
    config = entry.get("config")
    if not isinstance(config, Mapping):
        errors.append(FieldError(f"{path}[0].config", "must be an object"))
        return None
    return {"parent": config.get("name"), "values": config.get("values")}


# --- small value helpers --------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_safe_int(value: object) -> bool:
    return _is_int(value) and abs(value) <= MAX_SAFE_INT


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite_number(value: object) -> bool:
    if not _is_number(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _is_short_list(value: object) -> bool:
    return isinstance(value, list | tuple) and len(value) <= MAX_CHOICES


def _kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _key(value: object) -> tuple[str | None, object]:
    """Hashable identity that keeps True apart from 1, which Python considers equal."""
    return _kind(value), value


def _same(a: object, b: object) -> bool:
    return _key(a) == _key(b)


def _find(value: object, values: tuple) -> object:
    """The entry of ``values`` equal to ``value`` (so its type is the list's), or None."""
    return next((v for v in values if _same(v, value)), None)


def _scalar_problem(value: object) -> str | None:
    kind = _kind(value)
    if kind is None:
        return _SCALAR_REASON
    if kind == "number" and not _is_finite_number(value):
        return "must be finite"
    return None


def _show(value: object) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _int_values(p: Parameter) -> list[int] | None:
    """The integers an Int can take, enumerated the way Keras Tuner samples them."""
    if p.sampling == "linear" or p.step is None:
        step = (p.step or 1) if p.sampling == "linear" else 1
        if (p.max - p.min) // step + 1 > MAX_ENUMERATED:
            return None
        return list(range(p.min, p.max + 1, step))
    count = int(math.log(p.max / p.min, p.step) + 1e-8) + 1
    if count > MAX_ENUMERATED:
        return None
    if p.sampling == "log":
        return [int(p.min * math.pow(p.step, i)) for i in range(count)]
    return [int(p.max + p.min - p.min * math.pow(p.step, i)) for i in range(count)]
