"""The learning-rate range test: train while raising the rate exponentially, record the loss against the
rate, and suggest a rate a bit below where the loss starts to climb (pure: spec and analysis)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tuner_service.errors import FieldError, InvalidInput
from tuner_service.space import KNOWN_ACTIVATIONS, KNOWN_OPTIMIZERS
from tuner_service.task import TaskSpec

ARCHITECTURE_KEYS = {"hidden_layers", "neurons", "activation", "optimizer", "momentum", "batch_size", "dropout", "l2"}
SPEC_KEYS = {"dataset", "task", "architecture", "min_lr", "max_lr", "steps", "validation", "smoothing", "seed"}
DEFAULT_ARCHITECTURE = {"hidden_layers": 2, "neurons": 64, "activation": "relu", "optimizer": "sgd", "batch_size": 32}


@dataclass(frozen=True)
class RangeTestSpec:
    """What to train and over which rates."""

    dataset: str
    task: TaskSpec
    architecture: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCHITECTURE))
    min_lr: float = 1e-5
    max_lr: float = 10.0
    steps: int = 500
    smoothing: float = 0.98
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "task": self.task.to_json(),
            "architecture": self.architecture,
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "steps": self.steps,
            "smoothing": self.smoothing,
            "seed": self.seed,
        }

    def rate(self, step: int) -> float:
        """The learning rate of batch ``step``: min_lr · (max_lr / min_lr)^(step / (steps - 1))."""
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / max(1, self.steps - 1))

    @classmethod
    def from_json(cls, doc: object) -> RangeTestSpec:
        if not isinstance(doc, dict):
            raise InvalidInput.one("body", "must be a JSON object")
        errors = [
            FieldError(str(k), f"unknown field; known: {', '.join(sorted(SPEC_KEYS))}")
            for k in doc
            if k not in SPEC_KEYS
        ]
        dataset = doc.get("dataset")
        if not isinstance(dataset, str | int) or isinstance(dataset, bool) or dataset == "":
            errors.append(FieldError("dataset", "is required: a built-in name ('digits'), 'builtin:NAME', or an id"))
            dataset = ""
        dataset = str(dataset)
        if dataset and not (dataset.isdigit() or dataset.startswith(("builtin:", "sha256:"))):
            dataset = f"builtin:{dataset}"
        task = None
        try:
            task = TaskSpec.from_json(doc.get("task"))
        except InvalidInput as exc:
            errors.extend(exc.errors)
        architecture = _architecture(doc.get("architecture", {}), errors)
        min_lr = _positive(doc, "min_lr", 1e-5, errors)
        max_lr = _positive(doc, "max_lr", 10.0, errors)
        if min_lr is not None and max_lr is not None and min_lr >= max_lr:
            errors.append(FieldError("min_lr", f"must be less than max_lr ({max_lr})"))
        if max_lr is not None and max_lr > 1000:
            errors.append(FieldError("max_lr", "must be at most 1000"))
        steps = doc.get("steps", 500)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 20 <= steps <= 20_000:
            errors.append(FieldError("steps", "must be an integer between 20 and 20000"))
        smoothing = doc.get("smoothing", 0.98)
        if isinstance(smoothing, bool) or not isinstance(smoothing, int | float) or not 0 <= smoothing < 1:
            errors.append(FieldError("smoothing", "must be a number in [0, 1)"))
        seed = doc.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            errors.append(FieldError("seed", "must be a non-negative integer"))
        if errors:
            raise InvalidInput(errors)
        return cls(dataset, task, architecture, min_lr, max_lr, steps, float(smoothing), seed)  # type: ignore[arg-type]


def _positive(doc: dict[str, Any], key: str, default: float, errors: list[FieldError]) -> float | None:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value) or value <= 0:
        errors.append(FieldError(key, "must be a number greater than 0"))
        return None
    return float(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float (a 400-digit rate)
        return False


def _architecture(doc: object, errors: list[FieldError]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        errors.append(FieldError("architecture", "must be an object of fixed hyperparameters"))
        return dict(DEFAULT_ARCHITECTURE)
    out = dict(DEFAULT_ARCHITECTURE)
    for key, value in doc.items():
        path = f"architecture.{key}"
        if key not in ARCHITECTURE_KEYS:
            errors.append(FieldError(path, f"unknown; known: {', '.join(sorted(ARCHITECTURE_KEYS))}"))
        elif key == "optimizer" and value not in KNOWN_OPTIMIZERS:
            errors.append(FieldError(path, f"unknown optimizer; known: {', '.join(sorted(KNOWN_OPTIMIZERS))}"))
        elif key == "activation" and value not in KNOWN_ACTIVATIONS:
            errors.append(FieldError(path, f"unknown activation; known: {', '.join(sorted(KNOWN_ACTIVATIONS))}"))
        elif key in ("hidden_layers", "neurons", "batch_size") and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not (0 if key == "hidden_layers" else 1) <= value <= 8192
        ):
            errors.append(FieldError(path, "must be a whole number in range"))
        elif key in ("momentum", "dropout", "l2") and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < (10 if key == "l2" else 1)
        ):
            errors.append(FieldError(path, "must be a number in range"))
        else:
            out[key] = value
    return out


# "A bit below where the loss starts to climb": the minimum itself is already too hot to train at.
SUGGESTION_DIVISOR = 3.0


@dataclass(frozen=True)
class Suggestion:
    """What the curve says: the suggested rate and the landmarks it was read from."""

    suggested_lr: float
    min_loss_lr: float
    diverged_lr: float | None
    half_diverged_lr: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "suggested_lr": self.suggested_lr,
            "min_loss_lr": self.min_loss_lr,
            "diverged_lr": self.diverged_lr,
            "half_diverged_lr": self.half_diverged_lr,
            "method": f"the rate at the smoothed loss minimum (where the loss starts to climb) divided by "
            f"{SUGGESTION_DIVISOR:g}, and never above half the rate at which the smoothed loss exceeded 4x its minimum",
        }


def smooth(losses: list[float], beta: float) -> list[float]:
    """Exponential moving average with bias correction (the usual range-test smoothing)."""
    out, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def analyse(rates: list[float], losses: list[float], *, beta: float = 0.98, diverge_factor: float = 4.0) -> Suggestion:
    """Read the suggestion off a recorded curve (non-finite losses end it)."""
    finite = [(rate, loss) for rate, loss in zip(rates, losses, strict=True) if math.isfinite(loss)]
    if len(finite) < 10:
        raise ValueError("the range test recorded fewer than 10 finite losses; lower min_lr")
    finite_rates = [r for r, _ in finite]
    smoothed = smooth([loss for _, loss in finite], beta)
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    diverged = next((i for i in range(lowest, len(smoothed)) if smoothed[i] > diverge_factor * smoothed[lowest]), None)
    if diverged is None and len(finite) < len(rates):  # the loss became NaN or infinite: that is divergence
        diverged = len(finite) - 1
    diverged_lr = finite_rates[diverged] if diverged is not None else None
    half = diverged_lr / 2 if diverged_lr is not None else None
    suggested = finite_rates[lowest] / SUGGESTION_DIVISOR
    return Suggestion(
        suggested_lr=min(suggested, half) if half is not None else suggested,
        min_loss_lr=finite_rates[lowest],
        diverged_lr=diverged_lr,
        half_diverged_lr=half,
    )
