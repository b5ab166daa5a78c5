"""SQLAlchemy tables: data sets, studies, trials and per-epoch metrics, with the leaderboard indexes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A stored timestamp with its zone: SQLite hands every one back naive, and all of them are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base; its metadata is what Alembic migrates."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class TeamRow(Base):
    """A team: its members share studies and data sets, a share weight of worker time and quotas."""

    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    share_weight: Mapped[float] = mapped_column(Float, default=1.0)
    max_concurrent_trials: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpu_hours_per_day: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The largest model (parameters) a study may ask for; at most the deployment's TUNER_MAX_MODEL_PARAMS.
    max_model_params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UserRow(Base):
    """A person (or a robot) in one team, with one role: admin, member or viewer."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    role: Mapped[str] = mapped_column(String(16))
    # Kept in the dashboard's session cookie and compared on each request: signing out raises it, which
    # ends that session everywhere, including copies of its cookie.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TokenRow(Base):
    """An API token; only its SHA-256 is kept, so a leaked database holds no usable token."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_tokens_user", "user_id"),)


class DatasetRow(Base):
    """A data set the service can train on: a built-in one or an uploaded file (by content hash)."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The team that uploaded it; NULL for the built-in sets every team may use.
    team_id: Mapped[int | None] = mapped_column(
        ForeignKey("teams.id", ondelete="RESTRICT", name="fk_datasets_team"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    # Two teams uploading the same bytes get a row each (each sees only its own); a built-in set has one
    # shared row, kept unique by the partial index.
    __table_args__ = (
        Index("uq_datasets_team_key", "team_id", "key", unique=True),
        Index(
            "uq_datasets_shared_key",
            "key",
            unique=True,
            sqlite_where=text("team_id IS NULL"),
            postgresql_where=text("team_id IS NULL"),
        ),
    )


class StudyRow(Base):
    """One search: its full spec, its status, the search algorithm's saved state and its best trial."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"))
    task_type: Mapped[str] = mapped_column(String(16))
    algorithm: Mapped[str] = mapped_column(String(32))
    objective_name: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(3))
    max_trials: Mapped[int] = mapped_column(Integer)
    parallelism: Mapped[int] = mapped_column(Integer, default=1)
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    team_id: Mapped[int | None] = mapped_column(
        ForeignKey("teams.id", ondelete="RESTRICT", name="fk_studies_team"), nullable=True
    )
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL", name="fk_studies_owner"), nullable=True
    )
    pool: Mapped[str] = mapped_column(String(16), default="cpu", server_default="cpu")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    oracle_state: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    best_trial_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    best_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The client's Idempotency-Key of the submission: a retried POST finds this study instead of making another.
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)

    trials: Mapped[list[TrialRow]] = relationship(back_populates="study", passive_deletes=True)

    __table_args__ = (
        Index("ix_studies_status_created", "status", "created_at"),
        Index("ix_studies_dataset", "dataset_id"),
        Index("ix_studies_pool_status", "pool", "status"),
        Index("ix_studies_team", "team_id"),
        Index("uq_studies_team_idempotency_key", "team_id", "idempotency_key", unique=True),
    )


MULTI_SLOT = text("gpu_slots > 1")
RANKED = text("status IN ('completed', 'pruned') AND sort_key IS NOT NULL")
# Finished trials with a score that no trial resumes yet (ASHA's candidates for a promotion).
RANKED_OPEN = text("status IN ('completed', 'pruned') AND sort_key IS NOT NULL AND NOT promoted")
# The same condition for queries that join studies (which has a status too); the planner matches it to RANKED.
RANKED_TRIALS = text("trials.status IN ('completed', 'pruned') AND trials.sort_key IS NOT NULL")


class TrialRow(Base):
    """One set of hyperparameters trained once (or ``executions_per_trial`` times) by one worker.

    ``sort_key`` is the score signed so that smaller is always better (``-score`` when the objective
    is maximised); with ``dataset_id`` and ``objective_name`` copied from the study it lets one index
    serve every leaderboard, per study or across studies.
    """

    __tablename__ = "trials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    oracle_trial_id: Mapped[str] = mapped_column(String(32))
    ticket: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    # A digest of the configuration (its values without Hyperband's and ASHA's budget keys): a claim finds out
    # whether a drawn configuration is taken with one indexed lookup instead of reading the study's trials.
    config_hash: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # ASHA's and Hyperband's budget values as columns (``tuner/rung``, ``tuner/trial_id``: the trial whose
    # checkpoint this one continues), so that ASHA's next promotion is an indexed query over plain columns.
    rung: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resumes: Mapped[str | None] = mapped_column(String(32), nullable=True)
    oracle_trial_state: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    dataset_id: Mapped[int] = mapped_column(Integer)
    objective_name: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pool: Mapped[str] = mapped_column(String(16), default="cpu", server_default="cpu")
    gpu: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The GPU slots the trial took on its worker's GPU (resources.gpu_slots, at most the GPU's K); NULL: no GPU.
    gpu_slots: Mapped[int | None] = mapped_column(Integer, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    sort_key: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    epochs_run: Mapped[int] = mapped_column(Integer, default=0)  # the absolute epoch reached
    # Epochs this trial trained itself, every execution counted: a promoted trial starts at its parent's epoch.
    epochs_trained: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Whether a trial resumes this one (an ASHA or Hyperband promotion): set when that trial is claimed.
    promoted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # Seed, library versions and backend the trial trained with: what a rerun needs to reproduce it.
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Where a preempted trial continues (its worker saved a checkpoint there); NULL: from the start.
    resume_execution: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resume_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)

    study: Mapped[StudyRow] = relationship(back_populates="trials")
    epochs: Mapped[list[EpochRow]] = relationship(back_populates="trial", passive_deletes=True)

    __table_args__ = (
        UniqueConstraint("study_id", "number", name="uq_trials_study_number"),
        UniqueConstraint("ticket", name="uq_trials_ticket"),
        Index("ix_trials_study_board", "study_id", "status", "sort_key"),
        Index("ix_trials_study_config", "study_id", "config_hash"),
        Index("ix_trials_study_resumes", "study_id", "resumes"),
        Index("ix_trials_study_oracle_id", "study_id", "oracle_trial_id"),
        # Leaderboards: partial indexes over the ranked trials only, so one index range already holds the
        # rows in leaderboard order (measured in BENCHMARKS.md: 0.2-0.4x the time of sorting at 1M trials).
        Index("ix_trials_study_ranked", "study_id", "sort_key", "id", postgresql_where=RANKED, sqlite_where=RANKED),
        # ASHA's promotions (StudyTransaction.asha_promotion): each rung's finished trials in rank order, and
        # those of them not promoted yet (the best of which is the first entry of its rung).
        Index(
            "ix_trials_study_rung_ranked",
            "study_id",
            "rung",
            "sort_key",
            "number",
            postgresql_where=RANKED,
            sqlite_where=RANKED,
        ),
        Index(
            "ix_trials_study_rung_open",
            "study_id",
            "rung",
            "sort_key",
            "number",
            postgresql_where=RANKED_OPEN,
            sqlite_where=RANKED_OPEN,
        ),
        Index(
            "ix_trials_dataset_ranked",
            "dataset_id",
            "objective_name",
            "sort_key",
            "id",
            postgresql_where=RANKED,
            sqlite_where=RANKED,
        ),
        Index(
            "ix_trials_objective_ranked",
            "objective_name",
            "sort_key",
            "id",
            postgresql_where=RANKED,
            sqlite_where=RANKED,
        ),
        Index("ix_trials_team_ranked", "team_id", "sort_key", "id", postgresql_where=RANKED, sqlite_where=RANKED),
        Index("ix_trials_study_score", "study_id", "sort_key", "number"),
        Index("ix_trials_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_trials_team_started", "team_id", "started_at"),
        # Trials that finished lately, which every claim sums per team (the fair-share window; GPU hours today).
        Index("ix_trials_finished", "finished_at"),
        Index("ix_trials_pool_finished", "pool", "finished_at"),
        # A GPU's trials of several slots that finished lately, which every claim on that GPU looks up.
        Index("ix_trials_gpu_multi_slot", "gpu", "finished_at", postgresql_where=MULTI_SLOT, sqlite_where=MULTI_SLOT),
    )


class EpochRow(Base):
    """The metrics Keras reported at the end of one epoch of one execution of a trial."""

    __tablename__ = "epochs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    execution: Mapped[int] = mapped_column(Integer, default=0)
    epoch: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    trial: Mapped[TrialRow] = relationship(back_populates="epochs")

    __table_args__ = (UniqueConstraint("trial_id", "execution", "epoch", name="uq_epochs_trial_epoch"),)


class JobRow(Base):
    """Training work outside a study's trial budget: a learning-rate range test or a rerun of a trial."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT", name="fk_jobs_team"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL", name="fk_jobs_owner"))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE", name="fk_jobs_study"))
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE", name="fk_jobs_trial"))
    dataset_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pool: Mapped[str] = mapped_column(String(16), default="cpu")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_jobs_team_kind", "team_id", "kind"), Index("ix_jobs_trial", "trial_id"))


class WorkerHypermodelRow(Base):
    """A hypermodel one worker process offers to its pool, with the search space its ``hp`` calls declare.

    ``last_seen_at`` is refreshed while the worker runs, so the API can tell live offers from stale ones.
    """

    __tablename__ = "worker_hypermodels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker: Mapped[str] = mapped_column(String(128))
    pool: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    package: Mapped[str | None] = mapped_column(String(200), nullable=True)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target: Mapped[str] = mapped_column(String(300))
    search_space: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_kinds: Mapped[list[Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        UniqueConstraint("worker", "name", name="uq_worker_hypermodels_worker_name"),
        Index("ix_worker_hypermodels_pool_name", "pool", "name"),
    )
