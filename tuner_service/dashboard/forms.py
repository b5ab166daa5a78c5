"""What the dashboard's forms share: the typed text kept to show back, and each validation error of the
document a form makes placed next to the form field it is about."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from tuner_service.errors import FieldError


@dataclass
class PostedForm:
    """What the person typed (as text, to show it back) and the errors found, by form field."""

    values: dict[str, str]
    errors: dict[str, list[str]] = field(default_factory=dict)

    defaults: ClassVar[dict[str, str]] = {}
    # The document's field (a dotted path, or its start) -> the form field that shows its errors.
    error_fields: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Form fields that stand for many document fields show each error with its full path.
    errors_with_path: ClassVar[frozenset[str]] = frozenset({"form"})

    @classmethod
    def blank(cls) -> Self:
        return cls(dict(cls.defaults))

    @classmethod
    def posted(cls, form: Mapping[str, str]) -> Self:
        return cls({key: form.get(key, "").strip() for key in cls.defaults})

    def add(self, errors: list[FieldError]) -> None:
        for error in errors:
            target = self.field_for(error.field)
            text = f"{error.field}: {error.reason}" if target in self.errors_with_path else error.reason
            self.errors.setdefault(target, []).append(text)

    def field_for(self, path: str) -> str:
        for prefix, target in self.error_fields:
            if path == prefix or path.startswith(prefix + "."):
                return target
        return "form"


def parse_number(text: str) -> Any:
    """An int or float when the text is one; otherwise the text, which validation then names as wrong."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
