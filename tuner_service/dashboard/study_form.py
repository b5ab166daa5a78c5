"""The new-study form: its fields and defaults (the classic space), the study document it makes, and each
validation error placed next to the field it is about."""

from __future__ import annotations

import json
from typing import Any

from tuner_service.dashboard.forms import PostedForm, parse_number
from tuner_service.errors import FieldError

CLASSIC_SPACE: dict[str, Any] = {
    "hidden_layers": {"type": "int", "min": 0, "max": 8},
    "neurons": {"type": "int", "min": 16, "max": 256, "sampling": "log"},
    "learning_rate": {"type": "float", "min": 0.0001, "max": 0.01, "sampling": "log"},
    "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
    "batch_size": {"type": "choice", "values": [32, 64, 128]},
}

DEFAULTS: dict[str, str] = {
    "name": "",
    "dataset": "builtin:digits",
    "task_type": "multiclass",
    "architecture": "sequential",
    "objective": "",
    "algorithm": "random",
    "max_trials": "10",
    "parallelism": "1",
    "patience": "3",
    "max_epochs": "20",
    "priority": "normal",
    "seed": "",
    "search_space": json.dumps(CLASSIC_SPACE, indent=2),
}
NUMBERS = ("max_trials", "parallelism", "patience", "max_epochs", "seed")
OPTIONAL = frozenset({"objective", "seed"})

# The study document's field (a dotted path, or its start) -> the form field that shows its errors.
ERROR_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "name"),
    ("dataset", "dataset"),
    ("task.architecture", "architecture"),
    ("task", "task_type"),
    ("objective", "objective"),
    ("search_space", "search_space"),
    ("algorithm", "algorithm"),
    ("max_trials", "max_trials"),
    ("parallelism", "parallelism"),
    ("early_stopping.patience", "patience"),
    ("early_stopping", "max_epochs"),
    ("priority", "priority"),
    ("seed", "seed"),
)


class StudyForm(PostedForm):
    """The new-study form."""

    defaults = DEFAULTS
    error_fields = ERROR_FIELDS
    errors_with_path = frozenset({"search_space", "form"})

    def document(self) -> tuple[dict[str, Any], list[FieldError]]:
        """The study document, and the problems that stop it from being one (unparsable JSON, blanks)."""
        v = self.values
        problems: list[FieldError] = []
        numbers: dict[str, Any] = {}
        for key in NUMBERS:
            if not v[key]:
                if key not in OPTIONAL:
                    problems.append(FieldError(_doc_field(key), "is required"))
                continue
            numbers[key] = parse_number(v[key])
        try:
            space = json.loads(v["search_space"])
        except json.JSONDecodeError as exc:
            problems.append(FieldError("search_space", f"is not valid JSON: {exc.msg} at line {exc.lineno}"))
            space = CLASSIC_SPACE  # so that the other fields are still checked
        doc: dict[str, Any] = {
            "name": v["name"],
            "dataset": v["dataset"],
            "task": {"type": v["task_type"], "architecture": v["architecture"]},
            "search_space": space,
            "algorithm": v["algorithm"],
            "priority": v["priority"],
            "early_stopping": {k: numbers[k] for k in ("patience", "max_epochs") if k in numbers},
        }
        for key in ("max_trials", "parallelism", "seed"):
            if key in numbers:
                doc[key] = numbers[key]
        if v["objective"]:
            doc["objective"] = {"name": v["objective"]}
        return doc, problems


def _doc_field(key: str) -> str:
    return f"early_stopping.{key}" if key in ("patience", "max_epochs") else key
