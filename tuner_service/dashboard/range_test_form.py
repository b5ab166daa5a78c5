"""The form that starts a learning-rate range test: its fields and defaults (those of the API), the range-test
document it makes, and each validation error placed next to the field it is about."""

from __future__ import annotations

from typing import Any

from tuner_service.dashboard.forms import PostedForm, parse_number
from tuner_service.errors import FieldError
from tuner_service.lr_range import DEFAULT_ARCHITECTURE

DEFAULTS: dict[str, str] = {
    "dataset": "builtin:digits",
    "task_type": "multiclass",
    "hidden_layers": str(DEFAULT_ARCHITECTURE["hidden_layers"]),
    "neurons": str(DEFAULT_ARCHITECTURE["neurons"]),
    "activation": str(DEFAULT_ARCHITECTURE["activation"]),
    "optimizer": str(DEFAULT_ARCHITECTURE["optimizer"]),
    "batch_size": str(DEFAULT_ARCHITECTURE["batch_size"]),
    "min_lr": "1e-5",
    "max_lr": "10",
    "steps": "500",
}
ARCHITECTURE_FIELDS = ("hidden_layers", "neurons", "activation", "optimizer", "batch_size")
NUMBERS = ("hidden_layers", "neurons", "batch_size", "min_lr", "max_lr", "steps")

# The range-test document's field (a dotted path, or its start) -> the form field that shows its errors.
ERROR_FIELDS: tuple[tuple[str, str], ...] = (
    ("dataset", "dataset"),
    ("task", "task_type"),
    *((f"architecture.{name}", name) for name in ARCHITECTURE_FIELDS),
    ("min_lr", "min_lr"),
    ("max_lr", "max_lr"),
    ("steps", "steps"),
)


class RangeTestForm(PostedForm):
    """The form that starts a learning-rate range test."""

    defaults = DEFAULTS
    error_fields = ERROR_FIELDS

    def document(self) -> tuple[dict[str, Any], list[FieldError]]:
        """The range-test document, and the blanks that stop it from being one (every field is prefilled)."""
        v = self.values
        problems = [
            FieldError(f"architecture.{key}" if key in ARCHITECTURE_FIELDS else key, "is required")
            for key in NUMBERS
            if not v[key]
        ]
        numbers = {key: parse_number(v[key]) for key in NUMBERS if v[key]}
        architecture: dict[str, Any] = {k: numbers[k] for k in ARCHITECTURE_FIELDS if k in numbers}
        architecture |= {k: v[k] for k in ("activation", "optimizer")}
        doc: dict[str, Any] = {
            "dataset": v["dataset"],
            "task": {"type": v["task_type"]},
            "architecture": architecture,
            **{k: numbers[k] for k in ("min_lr", "max_lr", "steps") if k in numbers},
        }
        return doc, problems
