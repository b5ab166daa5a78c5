"""A study's ``model`` and its search space resolved against a hypermodel's declared parameters (pure Python).

A hypermodel declares its parameters through its ``hp`` calls; the workers record them. A study may
narrow or fix any of them with the usual search-space JSON, like Keras Tuner's ``hyperparameters``
argument; with ``tune_new_entries`` false the parameters it does not name stay at their defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuner_service.errors import FieldError, InvalidInput
from tuner_service.space import SearchSpace

BUILTIN_MLP = "mlp"
INPUT_KINDS = ("vectors", "images")
MODEL_KEYS = ("hypermodel", "tune_new_entries")
# Recorded in a stored study's model at submission (what the workers announced); ignored on input.
RECORDED_KEYS = ("target", "package", "version")
# What the built-in MLP offers when a study names it without a search space of its own.
MLP_DECLARED_SPACE: dict[str, Any] = {
    "hidden_layers": {"type": "int", "min": 1, "max": 3, "default": 2},
    "neurons": {"type": "int", "min": 16, "max": 256, "sampling": "log", "default": 64},
    "activation": {"type": "choice", "values": ["relu", "tanh", "gelu"]},
    "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log", "default": 1e-3},
    "optimizer": {"type": "choice", "values": ["adam", "sgd", "rmsprop"]},
    "dropout": {"type": "float", "min": 0.0, "max": 0.5, "default": 0.0},
    "batch_size": {"type": "choice", "values": [32, 64, 128]},
}


@dataclass(frozen=True)
class ModelRef:
    """Which hypermodel a study tunes; the built-in MLP unless it names another."""

    hypermodel: str = BUILTIN_MLP
    tune_new_entries: bool = True

    @property
    def is_builtin_mlp(self) -> bool:
        return self.hypermodel == BUILTIN_MLP

    def to_json(self) -> dict[str, Any]:
        return {"hypermodel": self.hypermodel, "tune_new_entries": self.tune_new_entries}

    @classmethod
    def from_json(cls, doc: object, errors: list[FieldError], *, field: str = "model") -> ModelRef:
        """Parse ``{"hypermodel": name, "tune_new_entries": bool}``; a bare string names the hypermodel."""
        if doc is None:
            return cls()
        if isinstance(doc, str):
            doc = {"hypermodel": doc}
        if not isinstance(doc, Mapping):
            errors.append(FieldError(field, 'must be {"hypermodel": name, "tune_new_entries": true|false}'))
            return cls()
        for key in doc:
            if key not in MODEL_KEYS + RECORDED_KEYS:
                errors.append(FieldError(f"{field}.{key}", f"unknown key; allowed: {', '.join(MODEL_KEYS)}"))
        name = doc.get("hypermodel", BUILTIN_MLP)
        if not isinstance(name, str) or not name or len(name) > 100:
            errors.append(FieldError(f"{field}.hypermodel", "must be a hypermodel name (GET /api/v1/hypermodels)"))
            name = BUILTIN_MLP
        tune = doc.get("tune_new_entries", True)
        if not isinstance(tune, bool):
            errors.append(FieldError(f"{field}.tune_new_entries", "must be true or false"))
            tune = True
        return cls(name, tune)


def model_ref(spec: Mapping[str, Any]) -> ModelRef:
    """The ``model`` of a stored (already valid) study spec; studies stored before hypermodels tune the MLP."""
    doc = spec.get("model") or {}
    return ModelRef(doc.get("hypermodel", BUILTIN_MLP), doc.get("tune_new_entries", True))


def data_kind(image_shape: object) -> str:
    """``images`` for a data set that keeps an image shape, else ``vectors``."""
    return "images" if image_shape else "vectors"


def resolve_space(
    declared: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    *,
    tune_new_entries: bool,
    hypermodel: str,
    field: str = "search_space",
    max_parameters: int = 64,
) -> SearchSpace:
    """The space a study searches: the declared parameters, each replaced by the study's override if any.

    A name the hypermodel does not declare is an error (it would be silently ignored by the build);
    without ``tune_new_entries`` every parameter the study does not name is fixed at its default.
    """
    if overrides is not None and not isinstance(overrides, Mapping):
        raise InvalidInput.one(field, "must be an object mapping declared parameter names to their specs")
    overrides = overrides or {}
    unknown = [name for name in overrides if name not in declared]
    if unknown:
        known = ", ".join(declared) or "none"
        reason = f"hypermodel {hypermodel!r} declares no such parameter; it declares: {known}"
        raise InvalidInput([FieldError(f"{field}.{name}", reason) for name in unknown])
    space: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in overrides:
            chosen = dict(overrides[name]) if isinstance(overrides[name], Mapping) else overrides[name]
            if isinstance(chosen, dict) and "condition" in spec and "condition" not in chosen:
                chosen["condition"] = spec["condition"]  # narrowing a conditional parameter keeps its condition
            space[name] = chosen
        elif tune_new_entries:
            space[name] = spec
        else:
            fixed: dict[str, Any] = {"type": "fixed", "value": _default_of(spec)}
            if "condition" in spec:
                fixed["condition"] = spec["condition"]
            space[name] = fixed
    space = _reachable(space)
    if not space:
        raise InvalidInput.one(field, f"hypermodel {hypermodel!r} declares no parameters to tune")
    return SearchSpace.from_json(space, field=field, max_parameters=max_parameters, mlp_domains=False)


def _reachable(space: dict[str, Any]) -> dict[str, Any]:
    """Drop parameters whose condition their (fixed or narrowed) parent can no longer meet: the hypermodel
    never reaches those ``hp`` calls, as Keras Tuner never activates their scope."""
    kept: dict[str, Any] = {}
    for name, spec in space.items():
        condition = spec.get("condition") if isinstance(spec, dict) else None
        if condition is None:
            kept[name] = spec
            continue
        parent = kept.get(condition.get("parent"))
        if parent is not None and _can_take_any(parent, condition.get("values") or []):
            kept[name] = spec
    return kept


def _can_take_any(spec: Any, values: list[Any]) -> bool:
    if not isinstance(spec, dict):
        return True  # malformed: left for the space's own checks to report
    kind = spec.get("type")
    if kind == "fixed":
        return spec.get("value") in values
    if kind == "choice":
        return any(v in values for v in spec.get("values") or [])
    if kind in ("int", "float"):
        low, high = spec.get("min"), spec.get("max")
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        return low is None or high is None or any(low <= v <= high for v in numbers)
    return True


def _default_of(spec: Mapping[str, Any]) -> object:
    bare = {k: v for k, v in spec.items() if k != "condition"}
    parsed = SearchSpace.from_json({"p": bare}, mlp_domains=False).parameters[0]
    return parsed.effective_default()
