"""Plain records the store hands out, so that no ORM object leaves a session."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from tuner_service.store.models import DatasetRow, EpochRow, JobRow, StudyRow, TrialRow

TERMINAL_STUDY = frozenset({"completed", "cancelled", "failed"})
FINISHED_TRIAL = frozenset({"completed", "failed", "cancelled", "pruned"})


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 with the UTC offset; SQLite hands datetimes back without their zone, all of them UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


@dataclass(frozen=True)
class DatasetRecord:
    """A stored data set."""

    id: int
    key: str
    name: str
    source: str
    info: dict[str, Any]
    team_id: int | None
    created_at: datetime

    @classmethod
    def of(cls, row: DatasetRow) -> DatasetRecord:
        return cls(row.id, row.key, row.name, row.source, dict(row.info), row.team_id, row.created_at)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": _iso(self.created_at)}


@dataclass(frozen=True)
class StudyRecord:
    """A stored study with its spec and status."""

    id: int
    name: str
    status: str
    dataset_id: int
    task_type: str
    algorithm: str
    objective_name: str
    direction: str
    max_trials: int
    parallelism: int
    priority: str
    team_id: int | None
    owner_id: int | None
    pool: str
    spec: dict[str, Any]
    oracle_state: dict[str, Any] | None
    best_trial_id: int | None
    best_score: float | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: StudyRow) -> StudyRecord:
        return cls(
            row.id, row.name, row.status, row.dataset_id, row.task_type, row.algorithm,
            row.objective_name, row.direction, row.max_trials, row.parallelism, row.priority,
            row.team_id, row.owner_id, row.pool, dict(row.spec), dict(row.oracle_state) if row.oracle_state else None,
            row.best_trial_id, row.best_score, row.error, row.created_at, row.started_at, row.finished_at,
        )  # fmt: skip

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STUDY

    @property
    def is_paused(self) -> bool:
        return self.status == "paused"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("oracle_state")
        for key in ("created_at", "started_at", "finished_at"):
            out[key] = _iso(out[key])
        return out


@dataclass(frozen=True)
class TrialRecord:
    """A stored trial."""

    id: int
    study_id: int
    number: int
    oracle_trial_id: str
    ticket: str | None
    status: str
    hyperparameters: dict[str, Any]
    oracle_trial_state: dict[str, Any] | None
    score: float | None
    best_epoch: int | None
    epochs_run: int
    metrics: dict[str, Any] | None
    worker: str | None
    pool: str
    gpu: str | None
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    retries: int
    error: str | None
    model_path: str | None
    environment: dict[str, Any] | None = None
    resume_execution: int | None = None
    resume_epoch: int | None = None
    # epochs_run is the absolute epoch reached; a promoted trial trained only the epochs after its parent's.
    epochs_trained: int = 0
    # The slots of its GPU the trial took (of the K that K worker processes on one GPU share); None: no GPU.
    gpu_slots: int | None = None

    @classmethod
    def of(cls, row: TrialRow) -> TrialRecord:
        return cls(
            row.id, row.study_id, row.number, row.oracle_trial_id, row.ticket, row.status,
            dict(row.hyperparameters), dict(row.oracle_trial_state) if row.oracle_trial_state else None,
            row.score, row.best_epoch, row.epochs_run, dict(row.metrics) if row.metrics else None,
            row.worker, row.pool, row.gpu, row.heartbeat_at, row.created_at, row.started_at, row.finished_at,
            row.duration_s, row.retries, row.error, row.model_path,
            dict(row.environment) if row.environment else None, row.resume_execution, row.resume_epoch,
            row.epochs_trained, row.gpu_slots,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("oracle_trial_state", "ticket", "oracle_trial_id", "resume_execution", "resume_epoch"):
            out.pop(key)
        out["has_model"] = out.pop("model_path") is not None
        out["best_epoch"] = human_epoch(self.best_epoch)
        for key in ("heartbeat_at", "created_at", "started_at", "finished_at"):
            out[key] = _iso(out[key])
        return out


def human_epoch(epoch: int | None) -> int | None:
    """An epoch as people count it (from 1): stored epochs are Keras's own (from 0)."""
    return None if epoch is None else epoch + 1


@dataclass(frozen=True)
class TrialPoint:
    """What a model-based proposer reads of a trial: its configuration, status and score (no metrics,
    environment or oracle state: a proposal reads every trial of the study)."""

    number: int
    status: str
    hyperparameters: dict[str, Any]
    score: float | None


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's metrics."""

    execution: int
    epoch: int
    metrics: dict[str, Any]

    @classmethod
    def of(cls, row: EpochRow) -> EpochRecord:
        return cls(row.execution, row.epoch, dict(row.metrics))

    def to_json(self) -> dict[str, Any]:
        """Epochs are stored as Keras counts them (from 0) and shown to people from 1, like on the dashboard."""
        return {**asdict(self), "epoch": self.epoch + 1}


@dataclass(frozen=True)
class TrialControl:
    """What a training worker should do after reporting an epoch."""

    stop: bool
    reason: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of a listing with the total count that matched."""

    items: list[Any]
    total: int
    limit: int
    offset: int

    def to_json(self) -> dict[str, Any]:
        items = [i.to_json() if hasattr(i, "to_json") else i for i in self.items]
        return {"items": items, "total": self.total, "limit": self.limit, "offset": self.offset}


@dataclass(frozen=True)
class JobRecord:
    """A stored job (learning-rate range test or rerun) with its result once finished."""

    id: int
    kind: str
    status: str
    team_id: int | None
    owner_id: int | None
    study_id: int | None
    trial_id: int | None
    dataset_id: int | None
    pool: str
    spec: dict[str, Any]
    result: dict[str, Any] | None
    progress: float
    error: str | None
    worker: str | None
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: JobRow) -> JobRecord:
        return cls(
            row.id, row.kind, row.status, row.team_id, row.owner_id, row.study_id, row.trial_id, row.dataset_id,
            row.pool, dict(row.spec), dict(row.result) if row.result else None, row.progress, row.error, row.worker,
            row.heartbeat_at, row.created_at, row.started_at, row.finished_at,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("heartbeat_at", "created_at", "started_at", "finished_at"):
            out[key] = _iso(out[key])
        return out
