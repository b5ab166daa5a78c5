"""The new-study form: its fields and defaults (the classic space), the study document it makes, and each
validation error placed next to the field it is about."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class StudyForm:
    """What the person typed (as text, to show it back) and the errors found, by form field."""

    values: dict[str, str]
    errors: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def blank(cls) -> StudyForm:
        return cls(dict(DEFAULTS))

    @classmethod
    def posted(cls, form: Mapping[str, str]) -> StudyForm:
        return cls({key: form.get(key, "").strip() for key in DEFAULTS})

    def add(self, errors: list[FieldError]) -> None:
        for error in errors:
            target = form_field(error.field)
            text = error.reason if target not in ("search_space", "form") else f"{error.field}: {error.reason}"
            self.errors.setdefault(target, []).append(text)

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


def form_field(path: str) -> str:
    for prefix, target in ERROR_FIELDS:
        if path == prefix or path.startswith(prefix + "."):
            return target
    return "form"


def _doc_field(key: str) -> str:
    return f"early_stopping.{key}" if key in ("patience", "max_epochs") else key


def parse_number(text: str) -> Any:
    """An int or float when the text is one; otherwise the text, which validation then names as wrong."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
