"""Hypermodels a study can tune: the built-in MLP and Keras Tuner hypermodels installed on the workers.

Workers discover hypermodels from installed packages (the ``tuner_service.hypermodels`` entry-point group)
and ``TUNER_HYPERMODELS``; code is never taken from an upload. This package's top level is pure Python:
the API imports it to validate studies against what the workers announced, without TensorFlow.
"""

from __future__ import annotations

from tuner_service.hypermodels.discovery import ENTRY_POINT_GROUP, Entry, discover
from tuner_service.hypermodels.registry import (
    BUILTIN_MLP,
    INPUT_KINDS,
    ModelRef,
    data_kind,
    resolve_space,
)

__all__ = [
    "BUILTIN_MLP",
    "ENTRY_POINT_GROUP",
    "INPUT_KINDS",
    "Entry",
    "ModelRef",
    "data_kind",
    "discover",
    "resolve_space",
]
