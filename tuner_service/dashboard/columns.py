"""Hyperparameters of finished trials as numeric columns, for the parallel-coordinates plot and the
random-forest importance: numbers as they are (log10 for log-sampled ranges), booleans as 0/1, other
values as ordinal codes in the order the search space lists them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuner_service.store import TrialRecord

TUNER_PREFIX = "tuner/"  # Keras Tuner's bookkeeping (Hyperband's tuner/epochs, ...), not a hyperparameter


@dataclass(frozen=True)
class Column:
    """One hyperparameter over a list of trials; ``None`` where the parameter was inactive."""

    name: str
    label: str
    values: tuple[float | None, ...]
    categories: tuple[str, ...] = ()  # tick labels of ordinal codes 0..n-1; empty for numbers

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.values)

    @property
    def constant(self) -> bool:
        return len({v for v in self.values}) <= 1


def parameter_names(trials: Sequence[TrialRecord], space: Mapping[str, Any]) -> list[str]:
    """Names in the search space's order, then any others the trials carry (``neurons_0``...), sorted."""
    seen = {k for t in trials for k in t.hyperparameters if not k.startswith(TUNER_PREFIX)}
    ordered = [name for name in space if name in seen]
    return ordered + sorted(seen - set(ordered))


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def column(name: str, trials: Sequence[TrialRecord], spec: Mapping[str, Any] | None) -> Column:
    raw = [t.hyperparameters.get(name) for t in trials]
    present = [v for v in raw if v is not None]
    spec = spec or {}
    if present and all(is_number(v) for v in present):
        if spec.get("sampling") == "log" and all(v > 0 for v in present):
            values = tuple(math.log10(v) if v is not None else None for v in raw)
            return Column(name, f"log10({name})", values)
        return Column(name, name, tuple(float(v) if v is not None else None for v in raw))
    if present and all(isinstance(v, bool) for v in present):
        return Column(name, name, tuple(float(v) if v is not None else None for v in raw), ("false", "true"))
    order = [str(v) for v in spec.get("values", [])]
    for v in present:
        if str(v) not in order:
            order.append(str(v))
    codes = tuple(float(order.index(str(v))) if v is not None else None for v in raw)
    return Column(name, name, codes, tuple(order))


def columns(trials: Sequence[TrialRecord], space: Mapping[str, Any]) -> list[Column]:
    return [column(name, trials, space.get(name)) for name in parameter_names(trials, space)]


def finished(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Completed trials with a score, in trial order."""
    return sorted((t for t in trials if t.status == "completed" and t.score is not None), key=lambda t: t.number)
