"""Queries of jobs: learning-rate range tests and reruns (mixed into :class:`~tuner_service.store.Store`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from tuner_service.errors import NotFound
from tuner_service.ids import is_id
from tuner_service.store.models import JobRow, utcnow
from tuner_service.store.records import JobRecord

JOB_KINDS = ("lr_range_test", "rerun")


class JobQueries:
    """Jobs; expects ``_read``, ``_write`` and ``_retrying`` from the Store."""

    _read: Any
    _write: Any
    _retrying: Any

    def create_job(self, kind: str, spec: dict[str, Any], **fields: Any) -> JobRecord:
        from tuner_service.store.store import clean_json

        def attempt() -> JobRecord:
            with self._write() as session:
                row = JobRow(kind=kind, spec=clean_json(spec), status="queued", **fields)
                session.add(row)
                session.flush()
                return JobRecord.of(row)

        return self._retrying(attempt)

    def get_job(self, job_id: int, *, kind: str | None = None, team_id: int | None = None) -> JobRecord:
        """A job; another team's job, or one of another kind, does not exist for the caller."""
        with self._read() as session:
            row = session.get(JobRow, job_id) if is_id(job_id) else None
            if row is None or (kind and row.kind != kind) or (team_id is not None and row.team_id != team_id):
                raise NotFound(kind or "job", job_id)
            return JobRecord.of(row)

    def list_jobs(self, *, kind: str, trial_id: int | None = None, team_id: int | None = None) -> list[JobRecord]:
        query = select(JobRow).where(JobRow.kind == kind)
        if trial_id is not None:
            query = query.where(JobRow.trial_id == trial_id)
        if team_id is not None:
            query = query.where(JobRow.team_id == team_id)
        with self._read() as session:
            return [JobRecord.of(r) for r in session.scalars(query.order_by(JobRow.id.desc()).limit(100))]

    def start_job(self, job_id: int, worker: str) -> JobRecord | None:
        """Take a queued job; None if it is gone or another delivery of its message already took it."""

        def attempt() -> JobRecord | None:
            with self._write() as session:
                row = session.scalar(select(JobRow).where(JobRow.id == job_id).with_for_update())
                if row is None or row.status != "queued":
                    return None
                row.status, row.worker = "running", worker
                row.started_at = row.heartbeat_at = utcnow()
                return JobRecord.of(row)

        return self._retrying(attempt)

    def job_progress(self, job_id: int, progress: float) -> None:
        def attempt() -> None:
            with self._write() as session:
                row = session.get(JobRow, job_id)
                if row is not None:
                    row.progress, row.heartbeat_at = progress, utcnow()

        self._retrying(attempt)

    def finish_job(
        self, job_id: int, *, status: str, result: dict[str, Any] | None = None, error: str | None = None
    ) -> JobRecord:
        from tuner_service.store.store import clean_json

        def attempt() -> JobRecord:
            with self._write() as session:
                row = session.get(JobRow, job_id)
                if row is None:
                    raise NotFound("job", job_id)
                row.status, row.result, row.error = status, clean_json(result), error
                row.progress, row.finished_at = 1.0 if status == "completed" else row.progress, utcnow()
                return JobRecord.of(row)

        return self._retrying(attempt)

    def requeue_stale_jobs(self, older_than_s: float) -> list[JobRecord]:
        """Running jobs whose worker went silent, put back to queued (the reaper enqueues them again)."""
        from datetime import timedelta

        cutoff = utcnow() - timedelta(seconds=older_than_s)

        def attempt() -> list[JobRecord]:
            with self._write() as session:
                rows = list(
                    session.scalars(
                        select(JobRow).where(JobRow.status == "running", JobRow.heartbeat_at < cutoff).with_for_update()
                    )
                )
                for row in rows:
                    row.status, row.worker, row.progress = "queued", None, 0.0
                return [JobRecord.of(r) for r in rows]

        return self._retrying(attempt)
