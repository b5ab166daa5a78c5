"""Queries of the hypermodel registry: what each worker offers its pool (mixed into the Store)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update

from tuner_service.store.models import WorkerHypermodelRow, as_utc, utcnow

# Workers named after host and pid leave a new name at every restart: forget those not seen for a week.
FORGET_AFTER = timedelta(days=7)


@dataclass(frozen=True)
class HypermodelOffer:
    """One worker's announcement of one hypermodel; ``live`` when the worker was seen recently."""

    worker: str
    pool: str
    name: str
    package: str | None
    version: str | None
    target: str
    search_space: dict[str, Any]
    input_kinds: tuple[str, ...]
    error: str | None
    last_seen_at: datetime
    live: bool


class HypermodelQueries:
    """The worker_hypermodels table; expects ``_read``, ``_write`` and ``_retrying`` from the Store."""

    _read: Any
    _write: Any
    _retrying: Any

    def announce_hypermodels(self, worker: str, pool: str, offers: list[dict[str, Any]]) -> None:
        """Replace what ``worker`` offers with ``offers`` (dicts of the row's columns) and mark it seen now;
        announcements of workers gone for a week are dropped."""
        from tuner_service.store.store import clean_json

        def attempt() -> None:
            with self._write() as session:
                now = utcnow()
                session.execute(
                    delete(WorkerHypermodelRow).where(
                        (WorkerHypermodelRow.worker == worker) | (WorkerHypermodelRow.last_seen_at < now - FORGET_AFTER)
                    )
                )
                for offer in offers:
                    session.add(
                        WorkerHypermodelRow(
                            worker=worker,
                            pool=pool,
                            name=offer["name"],
                            package=offer.get("package"),
                            version=offer.get("version"),
                            target=offer["target"],
                            search_space=clean_json(offer.get("search_space") or {}),
                            input_kinds=list(offer.get("input_kinds") or []),
                            error=offer.get("error"),
                            started_at=now,
                            last_seen_at=now,
                        )
                    )

        self._retrying(attempt)

    def worker_seen(self, worker: str, *, stopped: bool = False) -> None:
        """Refresh ``worker``'s offers (it is alive), or mark them stopped when it shuts down."""

        def attempt() -> None:
            with self._write() as session:
                values: dict[str, Any] = {"last_seen_at": utcnow()}
                values["stopped_at"] = utcnow() if stopped else None
                session.execute(
                    update(WorkerHypermodelRow).where(WorkerHypermodelRow.worker == worker).values(**values)
                )

        self._retrying(attempt)

    def hypermodel_offers(self, *, live_within_s: float, pool: str | None = None) -> list[HypermodelOffer]:
        """Every offer (stale ones too, marked), newest first; ``pool`` narrows to one pool."""
        query = select(WorkerHypermodelRow).order_by(WorkerHypermodelRow.last_seen_at.desc())
        if pool is not None:
            query = query.where(WorkerHypermodelRow.pool == pool)
        cutoff = utcnow() - timedelta(seconds=live_within_s)
        with self._read() as session:
            return [
                HypermodelOffer(
                    worker=row.worker,
                    pool=row.pool,
                    name=row.name,
                    package=row.package,
                    version=row.version,
                    target=row.target,
                    search_space=dict(row.search_space or {}),
                    input_kinds=tuple(row.input_kinds or ()),
                    error=row.error,
                    last_seen_at=as_utc(row.last_seen_at),
                    live=row.stopped_at is None and as_utc(row.last_seen_at) >= cutoff,
                )
                for row in session.scalars(query)
            ]
