"""The data sets a study can name: built-in ones registered on first use, and uploads by content hash."""

from __future__ import annotations

import io
from typing import BinaryIO

from tuner_service.config import Settings
from tuner_service.datasets import BUILTIN_NAMES, DatasetInfo, describe_builtin, ingest_upload_stream
from tuner_service.errors import InvalidInput, NotFound
from tuner_service.store import DatasetRecord, Store


def find_dataset(
    store: Store, ref: str, *, team_id: int | None = None, field: str = "dataset"
) -> tuple[DatasetInfo, int | None]:
    """Describe the data set ``ref`` names (``builtin:NAME``, ``sha256:HEX`` or an id) as ``team_id`` sees
    it, without storing anything; also returns the team that owns it (None: shared)."""
    if ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        if name not in BUILTIN_NAMES:
            raise InvalidInput.one(field, f"unknown built-in data set {name!r}; known: {', '.join(BUILTIN_NAMES)}")
        return describe_builtin(name), None
    try:
        record = store.get_dataset(ref, team_id=team_id)
    except NotFound:
        raise InvalidInput.one(field, f"no data set {ref!r}; upload it first or name a built-in one") from None
    return DatasetInfo.from_json(record.info), record.team_id


def register_dataset(store: Store, info: DatasetInfo, *, team_id: int | None = None) -> DatasetRecord:
    """The stored row for ``info`` (shared when ``team_id`` is None), created on first use."""
    name = info.name if len(info.name) <= 255 else info.name[:252] + "..."  # the column's width
    return store.ensure_dataset(info.key, name, info.source, info.to_json(), team_id=team_id)


def upload_dataset(
    store: Store,
    settings: Settings,
    source: BinaryIO | bytes,
    filename: str,
    *,
    target_column: str | None,
    team_id: int | None,
) -> DatasetRecord:
    """Validate and store an uploaded .npz or .csv file (read from ``source`` in chunks) for a team; the
    same bytes give the same data set."""
    info = ingest_upload_stream(
        io.BytesIO(source) if isinstance(source, bytes) else source,
        filename,
        settings.artifacts,
        target_column=target_column,
        max_bytes=settings.max_upload_bytes,
        max_dataset_bytes=settings.max_dataset_bytes,
    )
    return register_dataset(store, info, team_id=team_id)
