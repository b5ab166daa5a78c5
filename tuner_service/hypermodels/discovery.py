"""Finding hypermodels without importing them: entry points of installed packages and TUNER_HYPERMODELS."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata

from tuner_service.errors import FieldError, InvalidInput

ENTRY_POINT_GROUP = "tuner_service.hypermodels"
BUILTIN_TARGET = "tuner_service.hypermodels.mlp:MLPHyperModel"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}")
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class Entry:
    """Where a hypermodel lives (``module:attr``) and the distribution that ships it, if any."""

    name: str
    target: str
    package: str | None = None
    version: str | None = None


def parse_setting(text: str, *, field: str = "TUNER_HYPERMODELS") -> list[Entry]:
    """``name=module:attr,name2=module:attr`` as entries; a malformed item is an error, not ignored."""
    entries = []
    errors = []
    for index, item in enumerate(part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, target = item.partition("=")
        name, target = name.strip(), target.strip()
        if not _NAME.fullmatch(name) or not _TARGET.fullmatch(target):
            errors.append(FieldError(f"{field}[{index}]", f"{item!r} is not name=module:attr"))
            continue
        module = target.split(":", 1)[0].split(".", 1)[0]
        package, version = _distribution_of(module)
        entries.append(Entry(name, target, package, version))
    if errors:
        raise InvalidInput(errors)
    return entries


def discover(setting: str = "") -> list[Entry]:
    """The built-in MLP, then installed entry points, then ``setting`` (later names replace earlier ones)."""
    found: dict[str, Entry] = {"mlp": Entry("mlp", BUILTIN_TARGET, "tuner-service", _version("tuner-service"))}
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = point.dist
        found[point.name] = Entry(
            point.name, point.value, dist.metadata["Name"] if dist else None, dist.version if dist else None
        )
    for entry in parse_setting(setting):
        found[entry.name] = entry
    return list(found.values())


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _distribution_of(module: str) -> tuple[str | None, str | None]:
    names = metadata.packages_distributions().get(module) or []
    if not names:
        return None, None
    return names[0], _version(names[0])
