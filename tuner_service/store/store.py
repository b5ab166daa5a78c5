"""The one class that owns sessions and transactions; every SQL query of the service lives here."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DateTime,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, aliased, sessionmaker

from tuner_service.errors import Conflict, NotFound
from tuner_service.ids import is_id, looks_like_id, parse_id
from tuner_service.proposals import config_hash
from tuner_service.queue import TeamLoad
from tuner_service.store.accounts import AccountQueries
from tuner_service.store.engine import is_sqlite, make_engine
from tuner_service.store.hypermodels import HypermodelQueries
from tuner_service.store.jobs import JobQueries
from tuner_service.store.models import RANKED_TRIALS, DatasetRow, EpochRow, StudyRow, TrialRow, as_utc, utcnow
from tuner_service.store.queue import (
    PROPOSAL_LOCK_CLASS,
    TEAM_LOCK_CLASS,
    Load,
    QueueQueries,
    SettledLoads,
    team_loads,
    trial_load,
)
from tuner_service.store.records import (
    FINISHED_TRIAL,
    TERMINAL_STUDY,
    DatasetRecord,
    EpochRecord,
    Page,
    StudyRecord,
    TrialControl,
    TrialPoint,
    TrialRecord,
    human_epoch,
)

TRIAL_SORTS = {
    "score": TrialRow.sort_key,
    "number": TrialRow.number,
    "duration": TrialRow.duration_s,
    "created": TrialRow.created_at,
}
# A pruned trial has a real (if partial) score: it ranks, marked as pruned.
RANKED_TRIAL = ("completed", "pruned")
TRIAL_STATUSES = frozenset({"running", "pending", "completed", "failed", "cancelled", "pruned"})
STUDY_STATUSES = frozenset({"queued", "running", "paused", "completed", "cancelled", "failed"})


def clean_json(value: Any) -> Any:
    """Make a value storable as JSON everywhere: numpy scalars to Python, NaN and infinities to None.

    PostgreSQL's JSON type rejects NaN, and a diverged trial reports exactly that.
    """
    try:  # the common case, plain JSON already: one round trip through the C encoder and decoder
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return _clean_json(value)


def _clean_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def sort_key(score: float | None, direction: str) -> float | None:
    """Sign a score so that ascending order is best-first whatever the direction."""
    if score is None:
        return None
    return -score if direction == "max" else score


# What ``with_study_lock(..., skip_locked=True)`` answers when the study's lock is taken.
LOCKED = object()
# What Store.proposal_lease yields when it took the lease: at once, or after another process's fit released it.
LEASE_FREE = "free"
LEASE_AFTER_FIT = "after fit"


# Statements run on every claim or report, built once: building one costs about as much as running it.
_LOAD = select(*trial_load(bindparam("study_id")))
_TAKEN = select(TrialRow.config_hash).where(
    TrialRow.study_id == bindparam("study_id"), TrialRow.config_hash.in_(bindparam("digests", expanding=True))
)

_INSERT_TRIAL = insert(TrialRow).returning(TrialRow.id)


@functools.cache
def _insert_trial_if_free(columns: tuple[str, ...]) -> Any:
    """:data:`_INSERT_TRIAL` of these columns, unless a trial of the study has the new trial's configuration digest:
    no row then. Its parameters are the column names prefixed ``new_``."""
    table = TrialRow.__table__
    values = _new_values(columns).values()
    same = select(TrialRow.id).where(
        TrialRow.study_id == bindparam("new_study_id"), TrialRow.config_hash == bindparam("new_config_hash")
    )
    return (
        insert(TrialRow)
        .from_select([table.c[name] for name in columns], select(*values).where(~same.exists()))
        .returning(TrialRow.id)
    )


_PROMOTED = (
    update(TrialRow)
    .where(TrialRow.study_id == bindparam("of_study"), TrialRow.oracle_trial_id == bindparam("parent"))
    .values(promoted=True)
)


@functools.cache
def _insert_trial_bound(columns: tuple[str, ...]) -> Any:
    """:data:`_INSERT_TRIAL` of these columns, its parameters the column names prefixed ``new_``."""
    return insert(TrialRow).values(**_new_values(columns)).returning(TrialRow.id)


def _new_values(columns: tuple[str, ...]) -> dict[str, Any]:
    """A new trial's values of these columns as parameters named ``new_<column>``."""
    table = TrialRow.__table__
    return {name: bindparam(f"new_{name}", type_=table.c[name].type) for name in columns}


@functools.cache
def _with_writes(insert_trial: Any, promotion: bool, study_columns: tuple[str, ...]) -> Any:
    """PostgreSQL: a claim's insert of its trial (``insert_trial``) with the claim's other writes in the same
    statement, as CTEs: with ``promotion``, :data:`_PROMOTED` (parameters ``of_study`` and ``parent``), and the
    study's changed columns (parameters ``study_<column>``). Every statement under the study's lock holds the lock
    a round trip longer, and every other claim of the study waits that long: a Hyperband claim writes its state,
    and a promotion marks its parent, in the insert's round trip. The CTEs run even if the insert adds no row (a
    draw found taken), and that claim's transaction is then rolled back."""
    statement = insert_trial
    if promotion:
        statement = statement.add_cte(_PROMOTED.cte("promoted"))
    if study_columns:
        table = StudyRow.__table__
        changes = {name: bindparam(f"study_{name}", type_=table.c[name].type) for name in study_columns}
        study = update(StudyRow).where(StudyRow.id == bindparam("of_study")).values(**changes)
        statement = statement.add_cte(study.cte("study_changes"))
    return statement


# What a TrialRecord is made of: a report's statement returns these columns only (every column a psycopg result
# describes costs the client an object).
_TRIAL_COLUMNS = [TrialRow.__table__.c[f.name] for f in dataclasses.fields(TrialRecord)]


@functools.cache
def _finish_running(dialect: str) -> Any:
    """Store a running trial's result and read its row back, in one statement (every report makes one); no
    row when the trial is not running (a report made twice)."""
    now = bindparam("now", type_=DateTime(timezone=True))
    if dialect == "postgresql":
        duration = func.extract("epoch", now - TrialRow.started_at)
    else:  # SQLite keeps timestamps as ISO strings of one format
        duration = (func.julianday(now) - func.julianday(TrialRow.started_at)) * 86400.0
    return (
        update(TrialRow)
        .where(
            TrialRow.id == bindparam("of_trial"),
            TrialRow.study_id == bindparam("of_study"),
            TrialRow.status == "running",
        )
        .values(
            status=bindparam("new_status"),
            score=bindparam("new_score"),
            sort_key=bindparam("new_sort_key"),
            best_epoch=bindparam("new_best_epoch"),
            metrics=bindparam("new_metrics", type_=TrialRow.metrics.type),
            error=bindparam("new_error"),
            model_path=bindparam("new_model_path"),
            environment=bindparam("new_environment", type_=TrialRow.environment.type),
            finished_at=now,
            duration_s=duration,
        )
        .returning(*_TRIAL_COLUMNS, *_load_before(dialect))
    )


@functools.cache
def _finish_unlocked() -> Any:
    """PostgreSQL: :func:`_finish_running` without the study's lock, as one statement that is its own transaction:
    the trial's update, the study's best score and trial where the new score beats them (the study's row is locked
    only while the statement runs: a concurrent report's update of it waits, then re-checks the condition on the
    row it finds), and the trial's row with the study's load (as the statement's snapshot found it) and status."""
    done = _finish_running("postgresql").cte("done")
    new_score = bindparam("new_score")
    beats = or_(
        StudyRow.best_score.is_(None),
        and_(StudyRow.direction == "max", StudyRow.best_score < new_score),
        and_(StudyRow.direction == "min", StudyRow.best_score > new_score),
    )
    best = (
        update(StudyRow)
        .where(StudyRow.id == bindparam("of_study"), bindparam("ranked"), beats, exists(select(done.c.id)))
        .values(best_score=new_score, best_trial_id=bindparam("of_trial"))
        .cte("best")
    )
    return (
        select(done, StudyRow.status.label("study_status"), StudyRow.max_trials.label("study_max_trials"))
        .select_from(done.join(StudyRow, StudyRow.id == done.c.study_id))
        .add_cte(best)
    )


def _load_before(dialect: str) -> tuple[Any, ...]:
    """On PostgreSQL, the study's trial load as the report's UPDATE found it (its subqueries read the statement's
    snapshot, before its own change): the report then needs no statement of its own for the load. Only a scored
    report made without the study's lock (:func:`_finish_unlocked`) changes a trial's status without it, and that
    only lowers the running count; a report that completes a study on this load therefore misses no trial still
    running, and one made meanwhile without the lock checks for completion itself after its commit. SQLite's
    RETURNING gives no such promise: there the report reads the load after the update."""
    if dialect != "postgresql":
        return ()
    counted = TrialRow.__table__.alias("counted")
    of_study = counted.c.study_id == bindparam("of_study")
    total = select(func.coalesce(func.max(counted.c.number) + 1, 0)).where(of_study)
    running, pending = (select(func.count()).where(of_study, counted.c.status == s) for s in ("running", "pending"))
    return (
        total.scalar_subquery().label("load_total"),
        running.scalar_subquery().label("load_running"),
        pending.scalar_subquery().label("load_pending"),
    )


def _of_rung(trial: Any, rung: int) -> tuple[Any, ...]:
    """The study's finished trials with a score at ``rung``, as ``ix_trials_study_rung_ranked`` holds them (the
    literals are written into the SQL, so that a prepared statement's generic plan can still use that index)."""
    finished = (literal_column("'completed'"), literal_column("'pruned'"))
    return (
        trial.study_id == bindparam("study_id"),
        trial.rung == literal_column(str(int(rung))),
        trial.status.in_(finished),
        trial.sort_key.is_not(None),
    )


@functools.cache
def _asha_candidates(rungs: int) -> Any:
    """For each rung below ``rungs``: its best finished trial that has no child yet, with that trial's place in
    the rung (1 + the finished trials ranked ahead of it, every one of them promoted already) and how many of
    the rung's trials finished; one row per rung that has such a trial.

    The best trial not promoted is the first entry of its rung in ``ix_trials_study_rung_open``, and the two
    counts are index-only scans of ``ix_trials_study_rung_ranked``: before, a window ranked every finished trial
    of the study on each claim, and skipping the promoted ones took a read of every child (1.3 ms of the
    database's time at 750 trials)."""
    parts = []
    for rung in range(rungs):
        other = aliased(TrialRow)
        best = (
            select(TrialRow.oracle_trial_id, TrialRow.hyperparameters, TrialRow.sort_key, TrialRow.number)
            .where(*_of_rung(TrialRow, rung), text("NOT trials.promoted"))
            .order_by(TrialRow.sort_key, TrialRow.number)
            .limit(1)
            .subquery(f"best_{rung}")
        )
        ahead = select(func.count()).where(
            *_of_rung(other, rung), tuple_(other.sort_key, other.number) < tuple_(best.c.sort_key, best.c.number)
        )
        finished = select(func.count()).where(*_of_rung(other, rung))
        parts.append(
            select(
                best.c.oracle_trial_id,
                best.c.hyperparameters,
                literal(rung).label("rung"),
                (ahead.scalar_subquery() + 1).label("place"),
                finished.scalar_subquery().label("finished"),
            )
        )
    return union_all(*parts) if len(parts) > 1 else parts[0]


_RANKED = select(TrialRow.oracle_trial_id, TrialRow.sort_key, TrialRow.hyperparameters).where(
    TrialRow.study_id == bindparam("study_id"),
    TrialRow.oracle_trial_id.in_(bindparam("ids", expanding=True)),
    TrialRow.status.in_(("completed", "pruned")),
    TrialRow.sort_key.is_not(None),
)


_FACTS = select(StudyRow.algorithm, StudyRow.objective_name, StudyRow.direction).where(
    StudyRow.id == bindparam("study_id")
)


# A study's row as a transaction locks it (Core, the columns of a StudyRecord), by (skip_locked, several, with
# load): with several ids, the first of them by id whose lock no other transaction holds (with skip_locked); with
# the load, the study's trial load too (see StudyTransaction.load).
_STUDY_COLUMNS = [StudyRow.__table__.c[f.name] for f in dataclasses.fields(StudyRecord)]
_LOAD_COLUMNS = [
    column.label(name)
    for column, name in zip(trial_load(StudyRow.id), ("load_total", "load_running", "load_pending"), strict=True)
]
_LOCK_STUDY = {
    (skip, several, with_load): select(*_STUDY_COLUMNS, *(_LOAD_COLUMNS if with_load else ()))
    .where(StudyRow.id.in_(bindparam("ids", expanding=True)) if several else StudyRow.id == bindparam("ids"))
    .order_by(StudyRow.id)
    .limit(1)
    .with_for_update(skip_locked=skip)
    for skip in (False, True)
    for several in (False, True)
    for with_load in (False, True)
}


class ClaimAgain(Exception):
    """What an optimistic claim (``locked_study(optimistic=True)``) took for granted proved wrong; its transaction
    is rolled back: claim again, reading everything apart."""


class StaleLoad(ClaimAgain):
    """The trial load read with a study's lock missed a trial that another transaction committed as the lock was
    taken: the claim's new trial took a number that is no longer free."""


class TakenDraw(ClaimAgain):
    """A random draw inserted without looking it up first (see :meth:`StudyTransaction.expect_free`) is the
    configuration of a trial the study has already."""


def _violates(exc: IntegrityError, constraint: str) -> bool:
    diag = getattr(exc.orig, "diag", None)  # psycopg names the constraint; SQLite's message names the columns
    if diag is not None and getattr(diag, "constraint_name", None):
        return diag.constraint_name == constraint
    return constraint == "uq_trials_study_number" and "trials.study_id, trials.number" in str(exc.orig)


class StudyTransaction:
    """Writes to one study and its trials while holding the study's lock.

    The study's row is read once, as Core columns (every claim and report locks one), and what the transaction
    changes in it is written back in one ``UPDATE`` before the commit (:meth:`write_study`); nothing inside the
    transaction reads the study's row from the database meanwhile."""

    def __init__(self, session: Session, study: StudyRecord, load: Load | None = None) -> None:
        self._session = session
        self._record = study
        self._changes: dict[str, Any] = {}
        self._rows: dict[int, TrialRow] = {}
        self._locked_load = load  # read with the lock, until this transaction changes a trial
        # An optimistic claim's transaction (the load came with the lock) may also insert a random draw unchecked.
        self.optimistic = load is not None
        self._unchecked: str | None = None

    @property
    def study(self) -> StudyRecord:
        """The study as it stands in this transaction, its changes included."""
        return self._record

    def _change(self, **values: Any) -> None:
        self._changes.update(values)
        self._record = dataclasses.replace(self._record, **values)

    def write_study(self) -> None:
        """Write the study's changed columns (the lock's holder calls this before it commits)."""
        if self._changes:
            statement = update(StudyRow).where(StudyRow.id == self._record.id).values(**self._changes)
            self._session.connection().execute(statement)
            self._changes = {}

    def trials(self) -> list[TrialRecord]:
        rows = self._session.scalars(
            select(TrialRow).where(TrialRow.study_id == self._record.id).order_by(TrialRow.number)
        )
        return [TrialRecord.of(r) for r in rows]

    @property
    def database(self) -> str:
        """Which database this transaction writes to (for caches kept across transactions)."""
        bind = self._session.get_bind()
        return str(bind.engine.url if hasattr(bind, "engine") else bind.url)

    def oracle_trial_states(self, skip: set[str] = frozenset()) -> list[tuple[str, str, dict[str, Any] | None]]:
        """(oracle trial id, status, saved oracle state) of the study's trials, by number; the state is None
        for finished trials named in ``skip`` (the caller has them). Only these columns are read, so that
        restoring an oracle stays cheap on a large study."""
        # Every claim and report of an oracle-driven study reads a row per trial here: Core rows, without the
        # ORM's per-row work (a third of a restore's time at 600 trials).
        self._session.flush()  # Core statements do not flush the session's pending changes themselves
        core = self._session.connection()
        rows = core.execute(
            select(TrialRow.oracle_trial_id, TrialRow.status)
            .where(TrialRow.study_id == self._record.id, TrialRow.oracle_trial_state.is_not(None))
            .order_by(TrialRow.number)
        ).all()
        finished = {"completed", "failed", "cancelled", "pruned"}
        wanted = [trial_id for trial_id, status in rows if trial_id not in skip or status not in finished]
        states: dict[str, Any] = {}
        for start in range(0, len(wanted), 500):
            states.update(
                core.execute(
                    select(TrialRow.oracle_trial_id, TrialRow.oracle_trial_state).where(
                        TrialRow.study_id == self._record.id, TrialRow.oracle_trial_id.in_(wanted[start : start + 500])
                    )
                ).all()
            )
        out = []
        for trial_id, status in rows:
            if trial_id in states:
                if states[trial_id]:
                    out.append((trial_id, status, states[trial_id]))
            else:
                out.append((trial_id, status, None))
        return out

    def trial(self, trial_id: int) -> TrialRecord:
        return TrialRecord.of(self._row(trial_id))

    def trial_by_ticket(self, ticket: str) -> TrialRecord | None:
        row = self._session.scalar(
            select(TrialRow).where(TrialRow.study_id == self._record.id, TrialRow.ticket == ticket)
        )
        return TrialRecord.of(row) if row else None

    def next_pending(self) -> TrialRecord | None:
        row = self._session.scalar(
            select(TrialRow)
            .where(TrialRow.study_id == self._record.id, TrialRow.status == "pending")
            .order_by(TrialRow.number)
            .limit(1)
        )
        return TrialRecord.of(row) if row else None

    def finished_trials(self, study_ids: list[int]) -> list[TrialRecord]:
        """Completed trials of other studies (warm-start seeds), oldest first."""
        rows = self._session.scalars(
            select(TrialRow)
            .where(TrialRow.study_id.in_(study_ids), TrialRow.status == "completed", TrialRow.score.is_not(None))
            .order_by(TrialRow.study_id, TrialRow.number)
        )
        return [TrialRecord.of(r) for r in rows]

    def last_finished(self, limit: int) -> list[TrialRecord]:
        """The study's ``limit`` most recently finished trials, newest first."""
        rows = self._session.scalars(
            select(TrialRow)
            .where(TrialRow.study_id == self._record.id, TrialRow.finished_at.is_not(None))
            .order_by(TrialRow.finished_at.desc(), TrialRow.id.desc())
            .limit(limit)
        )
        return [TrialRecord.of(r) for r in rows]

    def load(self) -> Load:
        """How many trials the study has, and how many are running and pending: one indexed statement, whose
        cost does not grow with the study's finished trials (a claim and a report read it under the lock). A claim
        reads it in the statement that takes the lock (``optimistic``): on PostgreSQL that statement's snapshot is
        taken before the lock, so a claim that another committed just then finds its trial's number taken
        (:class:`StaleLoad`) and claims again; any change to a trial in this transaction makes it read anew."""
        if self._locked_load is not None:
            return self._locked_load
        self._session.flush()
        total, running, pending = self._session.connection().execute(_LOAD, {"study_id": self._record.id}).one()
        return Load(total, running, pending)

    def team_load(self, window_s: float) -> TeamLoad:
        """The study's team's load, read under the team's claim lock (PostgreSQL: an advisory lock held to
        the end of this transaction), so that two claims cannot both take the last trial of its quota."""
        team_id = self._record.team_id
        if self._session.get_bind().dialect.name == "postgresql" and team_id is not None:
            self._session.execute(select(func.pg_advisory_xact_lock(TEAM_LOCK_CLASS, team_id)))
        loads = team_loads(self._session, window_s, team_id)
        return loads.get(team_id) or TeamLoad(team_id, "-")

    def taken_configurations(self, digests: list[str]) -> set[str]:
        """Which of these configuration digests (``trials.config_hash``) a trial of the study already has."""
        self._session.flush()
        rows = self._session.connection().execute(_TAKEN, {"study_id": self._record.id, "digests": digests})
        return {digest for (digest,) in rows}

    def ranked_results(self, oracle_trial_ids: list[str]) -> dict[str, tuple[float, dict[str, Any]]]:
        """(sort key, values) of those of the study's trials with these oracle trial ids that finished with a
        score (completed, or pruned with the score they reached): the ones a promotion may rank."""
        if not oracle_trial_ids:
            return {}
        self._session.flush()
        rows = self._session.connection().execute(_RANKED, {"study_id": self._record.id, "ids": oracle_trial_ids})
        return {row.oracle_trial_id: (row.sort_key, dict(row.hyperparameters)) for row in rows}

    def asha_promotion(self, below_rung: int, reduction_factor: int) -> tuple[str, dict[str, Any], int] | None:
        """ASHA's next promotion: (oracle trial id, values, rung) of the best trial of the highest rung below
        ``below_rung`` that is in the top 1/η of its rung's finished trials and has no child yet, or None.

        One indexed statement (:func:`_asha_candidates`): a trial's rung and the trial it resumes (its
        ``tuner/rung`` and ``tuner/trial_id`` values) are columns of its row. The best unpromoted trial of a rung
        is the one to promote if any is: the others rank below it."""
        if below_rung < 1:
            return None
        self._session.flush()
        rows = self._session.connection().execute(_asha_candidates(below_rung), {"study_id": self._record.id})
        ready = [row for row in rows if row.place * reduction_factor <= row.finished]
        if not ready:
            return None
        row = max(ready, key=lambda r: r.rung)
        return row.oracle_trial_id, dict(row.hyperparameters), row.rung

    def count(self, *statuses: str) -> int:
        query = select(func.count()).where(TrialRow.study_id == self._record.id)
        if statuses:
            query = query.where(TrialRow.status.in_(statuses))
        return self._session.scalar(query) or 0

    def set_oracle_state(self, state: dict[str, Any]) -> None:
        self._change(oracle_state=clean_json(state))

    def set_priority(self, priority: str) -> None:
        self._change(priority=priority)

    def set_status(self, status: str, error: str | None = None) -> None:
        now, study = utcnow(), self._record
        changes: dict[str, Any] = {"status": status}
        if status == "running" and study.started_at is None:
            changes["started_at"] = now
        if status in TERMINAL_STUDY and study.finished_at is None:
            changes["finished_at"] = now
        if error is not None:
            changes["error"] = error
        self._change(**changes)

    def expect_free(self, digest: str) -> None:
        """The next trial inserted with this configuration digest was not looked up: its insert checks that no
        trial of the study has it (one statement where a lookup and an insert were two), and raises
        :class:`TakenDraw` when one does (only in an :attr:`optimistic` transaction, which a claim repeats)."""
        if not self.optimistic:
            raise RuntimeError("only an optimistic claim may insert a configuration it did not look up")
        self._unchecked = digest

    def add_trial(
        self,
        *,
        number: int,
        oracle_trial_id: str,
        ticket: str,
        hyperparameters: dict[str, Any],
        oracle_trial_state: dict[str, Any] | None,
        worker: str,
        gpu: str | None = None,
    ) -> TrialRecord:
        now = utcnow()
        study = self._record
        values = clean_json(hyperparameters)
        state = clean_json(oracle_trial_state)
        # A Core insert: every claim makes one, and the ORM's unit of work costs several times the statement.
        self._session.flush()
        locked_load, self._locked_load = self._locked_load, None
        digest = config_hash(values)
        unchecked, self._unchecked = self._unchecked == digest, None
        try:
            params = {
                    "study_id": study.id,
                    "number": number,
                    "oracle_trial_id": oracle_trial_id,
                    "ticket": ticket,
                    "status": "running",
                    "hyperparameters": values,
                    "config_hash": digest,
                    "rung": values.get("tuner/rung"),
                    "resumes": values.get("tuner/trial_id"),
                    "oracle_trial_state": state,
                    "promoted": False,
                    "dataset_id": study.dataset_id,
                    "objective_name": study.objective_name,
                    "team_id": study.team_id,
                    "pool": study.pool,
                    "gpu": gpu,
                    "worker": worker,
                    "epochs_run": 0,
                    "epochs_trained": 0,
                    "retries": 0,
                    "stop_requested": False,
                    "heartbeat_at": now,
                    "started_at": now,
                    "created_at": now,
            }  # fmt: skip
            statement = _INSERT_TRIAL
            if unchecked:
                statement = _insert_trial_if_free(tuple(params))
                params = {f"new_{key}": value for key, value in params.items()}
            connection = self._session.connection()
            parent = values.get("tuner/trial_id")
            folded = connection.dialect.name == "postgresql" and (parent is not None or self._changes)
            if folded:  # the promotion's mark and the study's changes go in the insert's statement (see _with_writes)
                if not unchecked:  # parameters named as no column is, which the CTEs' updates would take as theirs
                    statement = _insert_trial_bound(tuple(params))
                    params = {f"new_{key}": value for key, value in params.items()}
                statement = _with_writes(statement, parent is not None, tuple(self._changes))
                params.update({f"study_{key}": value for key, value in self._changes.items()})
                params.update(of_study=study.id, parent=parent)
            inserted = connection.execute(statement, params)
        except IntegrityError as exc:
            if locked_load is not None and _violates(exc, "uq_trials_study_number"):
                raise StaleLoad from exc
            raise
        trial_id = inserted.scalar()
        if trial_id is None:
            raise TakenDraw  # the claim's transaction is rolled back, the folded writes with it
        if folded:
            self._changes = {}
        elif parent is not None:  # a promotion: its parent is no longer a candidate
            connection.execute(_PROMOTED, {"of_study": study.id, "parent": parent})
        return TrialRecord(
            trial_id, study.id, number, oracle_trial_id, ticket, "running", dict(values), state and dict(state),
            None, None, 0, None, worker, study.pool, gpu, now, now, now, None, None, 0, None, None,
        )  # fmt: skip

    def restart_trial(self, trial_id: int, *, ticket: str, worker: str, gpu: str | None = None) -> TrialRecord:
        """Hand a requeued (or abandoned) trial to a new worker. Its old epochs are dropped, except those before
        the point a preempted run saved a checkpoint at (``resume_execution``/``resume_epoch``)."""
        row = self._row(trial_id)
        now = utcnow()
        dropped = delete(EpochRow).where(EpochRow.trial_id == trial_id)
        if row.resume_epoch is not None and row.resume_execution is not None:
            later_execution = EpochRow.execution > row.resume_execution
            same_later_epoch = (EpochRow.execution == row.resume_execution) & (EpochRow.epoch >= row.resume_epoch)
            dropped = dropped.where(later_execution | same_later_epoch)
        self._session.execute(dropped)
        row.status, row.ticket, row.worker, row.gpu = "running", ticket, worker, gpu
        row.heartbeat_at = row.started_at = now
        row.epochs_run = row.resume_epoch if row.resume_epoch is not None else 0
        # What survives of a preempted run was trained by this trial; the rest is trained again.
        kept = select(func.count()).select_from(EpochRow).where(EpochRow.trial_id == trial_id)
        row.epochs_trained = self._session.scalar(kept) or 0
        row.stop_requested, row.error = False, None
        self._session.flush()
        return TrialRecord.of(row)

    def finish_trial(
        self,
        trial_id: int,
        *,
        status: str,
        score: float | None = None,
        best_epoch: int | None = None,
        metrics: dict[str, Any] | None = None,
        oracle_trial_state: dict[str, Any] | None = None,
        error: str | None = None,
        model_path: str | None = None,
        environment: dict[str, Any] | None = None,
    ) -> TrialRecord:
        row = self._row(trial_id)
        now = utcnow()
        row.status = status
        row.score = score
        row.sort_key = sort_key(score, self._record.direction)
        row.best_epoch = best_epoch
        row.metrics = clean_json(metrics)
        row.error = error
        row.model_path = model_path
        row.environment = clean_json(environment)
        row.finished_at = now
        if oracle_trial_state is not None:
            row.oracle_trial_state = clean_json(oracle_trial_state)
        if row.started_at is not None:
            row.duration_s = (now - as_utc(row.started_at)).total_seconds()
        if score is not None and status in RANKED_TRIAL:
            self._keep_best(score, row.id)
        self._session.flush()
        return TrialRecord.of(row)

    def finish_running_trial(
        self,
        trial_id: int,
        *,
        status: str,
        score: float | None,
        best_epoch: int | None,
        metrics: dict[str, Any] | None,
        error: str | None,
        model_path: str | None,
        environment: dict[str, Any] | None,
    ) -> tuple[TrialRecord, Load | None] | None:
        """:meth:`finish_trial` for a trial that is running, as one Core statement: the stored trial and, on
        PostgreSQL, the study's load after it (else None: ask :meth:`load`); None when the trial is not running
        (or not the study's)."""
        self._locked_load = None
        self._session.flush()
        params = _report_params(
            self._record.id, self._record.direction, trial_id, status, score, best_epoch, metrics, error, model_path,
            environment,
        )  # fmt: skip
        connection = self._session.connection()
        row = connection.execute(_finish_running(connection.dialect.name), params).first()
        if row is None:
            return None
        if score is not None and status in RANKED_TRIAL:
            self._keep_best(score, row.id)
        load = None
        if connection.dialect.name == "postgresql":  # the load before the update, less this trial, no longer running
            load = Load(row.load_total, row.load_running - 1, row.load_pending)
        return TrialRecord.of(row), load

    def _keep_best(self, score: float, trial_id: int) -> None:
        """The study's best score and trial become this finished trial's if it beats them."""
        best = self._record.best_score
        if best is None or (score > best if self._record.direction == "max" else score < best):
            self._change(best_score=score, best_trial_id=trial_id)

    def set_trial_state(self, trial_id: int, oracle_trial_state: dict[str, Any]) -> None:
        self._row(trial_id).oracle_trial_state = clean_json(oracle_trial_state)

    def _row(self, trial_id: int) -> TrialRow:
        self._locked_load = None  # the row is read to be changed (or to build a record): count anew after
        # Held for the transaction: the session's identity map keeps only weak references, so a row read for a
        # record and then updated would otherwise be read again.
        row = self._rows.get(trial_id) or self._session.get(TrialRow, trial_id)
        if row is not None:
            self._rows[trial_id] = row
        if row is None or row.study_id != self._record.id:
            raise NotFound("trial", trial_id)
        return row


def _report_params(
    study_id: int, direction: str, trial_id: int, status: str, score: float | None, best_epoch: int | None,
    metrics: dict[str, Any] | None, error: str | None, model_path: str | None, environment: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """The parameters of :func:`_finish_running` (and of :func:`_finish_unlocked`)."""
    return {
        "of_trial": trial_id,
        "of_study": study_id,
        "now": utcnow(),
        "new_status": status,
        "new_score": score,
        "new_sort_key": sort_key(score, direction),
        "new_best_epoch": best_epoch,
        "new_metrics": clean_json(metrics),
        "new_error": error,
        "new_model_path": model_path,
        "new_environment": clean_json(environment),
    }


@dataclasses.dataclass(frozen=True)
class StudyFacts:
    """What a study is fixed at when it is created (a report needs these, and nothing changes them later)."""

    algorithm: str
    objective_name: str
    direction: str


@dataclasses.dataclass(frozen=True)
class Reported:
    """A report stored without the study's lock: the trial's row, the study's load as the report's statement found
    it (this trial no longer running) and the study's status and budget."""

    trial: TrialRecord
    load: Load
    study_status: str
    max_trials: int


class Store(AccountQueries, QueueQueries, JobQueries, HypermodelQueries):
    """SQL storage of accounts, data sets, studies, trials and epochs (SQLite or PostgreSQL).

    Reads that take ``team_id`` return only that team's rows; ``None`` means every team (an admin).
    """

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        # engine_options (e.g. pool_size) are for processes that run many claims at once, such as benchmarks.
        self.engine = make_engine(url, **engine_options)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._facts: dict[int, StudyFacts] = {}  # by study id (they never change, see StudyFacts)
        self._settled: dict[float, SettledLoads] = {}  # see QueueQueries.claim_view

    # -- schema -------------------------------------------------------------------------------
    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` with the shipped Alembic migrations."""
        from tuner_service.store.migrate import upgrade

        upgrade(self.url, revision)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- sessions -----------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A write transaction; retried by callers through :meth:`_retrying` on lock errors."""
        if is_sqlite(self.engine):
            conn = self.engine.connect().execution_options(sqlite_begin="IMMEDIATE")
            with conn, Session(bind=conn, expire_on_commit=False) as session, session.begin():
                yield session
        else:
            with self._sessions() as session, session.begin():
                yield session

    def _retrying(self, fn: Any, attempts: int = 5) -> Any:
        for attempt in range(attempts):
            try:
                return fn()
            except OperationalError as exc:
                # SQLite's "database is locked" past the busy timeout, PostgreSQL deadlocks.
                if attempt == attempts - 1 or not _is_lock_error(exc):
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    # -- data sets ----------------------------------------------------------------------------
    def ensure_dataset(
        self, key: str, name: str, source: str, info: dict[str, Any], *, team_id: int | None = None
    ) -> DatasetRecord:
        """Get the data set stored under ``key`` for ``team_id`` (None: shared), storing it first if new."""

        def find(session: Session) -> DatasetRow | None:
            owner = DatasetRow.team_id.is_(None) if team_id is None else DatasetRow.team_id == team_id
            return session.scalar(select(DatasetRow).where(DatasetRow.key == key, owner))

        def attempt() -> DatasetRecord:
            with self._write() as session:
                row = find(session)
                if row is None:
                    row = DatasetRow(key=key, name=name, source=source, info=info, team_id=team_id)
                    session.add(row)
                    session.flush()
                return DatasetRecord.of(row)

        try:
            return self._retrying(attempt)
        except IntegrityError:  # a concurrent upload of the same bytes won the insert
            with self._read() as session:
                return DatasetRecord.of(find(session))

    def get_dataset(self, ref: str | int, *, team_id: int | None = None) -> DatasetRecord:
        """A data set by id or key, as ``team_id`` sees it (its own uploads and the shared sets)."""
        query = select(DatasetRow)
        if isinstance(ref, int) or looks_like_id(ref) or ref.isdigit():
            dataset_id = ref if isinstance(ref, int) else parse_id(ref)
            if not is_id(dataset_id):  # no row has it; the database could not even compare it
                raise NotFound("dataset", ref, field="dataset")
            query = query.where(DatasetRow.id == dataset_id)
        else:
            query = query.where(DatasetRow.key == ref)
        if team_id is not None:
            query = query.where((DatasetRow.team_id == team_id) | DatasetRow.team_id.is_(None))
        with self._read() as session:
            row = session.scalars(query.order_by(DatasetRow.team_id.is_(None), DatasetRow.id)).first()
            if row is None:
                raise NotFound("dataset", ref, field="dataset")
            return DatasetRecord.of(row)

    def list_datasets(self, limit: int = 100, offset: int = 0, *, team_id: int | None = None) -> Page:
        query = select(DatasetRow)
        if team_id is not None:
            query = query.where((DatasetRow.team_id == team_id) | DatasetRow.team_id.is_(None))
        with self._read() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(DatasetRow.id).limit(limit).offset(offset))
            return Page([DatasetRecord.of(r) for r in rows], total, limit, offset)

    # -- studies ------------------------------------------------------------------------------
    def create_study(self, **fields: Any) -> StudyRecord:
        def attempt() -> StudyRecord:
            with self._write() as session:
                row = StudyRow(status="queued", **fields)
                session.add(row)
                session.flush()
                return StudyRecord.of(row)

        key = fields.get("idempotency_key")
        try:
            return self._retrying(attempt)
        except IntegrityError:
            if key is None:
                raise
            found = self.study_by_idempotency_key(fields.get("team_id"), key)  # a concurrent retry won the insert
            if found is None:
                raise
            return found

    def study_by_idempotency_key(self, team_id: int | None, key: str) -> StudyRecord | None:
        """The study the team submitted with this ``Idempotency-Key``, if any."""
        team = StudyRow.team_id.is_(None) if team_id is None else StudyRow.team_id == team_id
        with self._read() as session:
            row = session.scalar(select(StudyRow).where(team, StudyRow.idempotency_key == key))
            return StudyRecord.of(row) if row is not None else None

    def get_study(self, study_id: int, *, team_id: int | None = None) -> StudyRecord:
        """A study; another team's study does not exist for the caller (404, not 403)."""
        with self._read() as session:
            row = session.get(StudyRow, study_id) if is_id(study_id) else None
            if row is None or (team_id is not None and row.team_id != team_id):
                raise NotFound("study", study_id)
            return StudyRecord.of(row)

    def list_studies(
        self,
        *,
        status: str | None = None,
        dataset_id: int | None = None,
        team_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        query = select(StudyRow)
        if team_id is not None:
            query = query.where(StudyRow.team_id == team_id)
        if status:
            query = query.where(StudyRow.status == status)
        if dataset_id is not None:
            query = query.where(StudyRow.dataset_id == dataset_id)
        with self._read() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(StudyRow.id.desc()).limit(limit).offset(offset))
            return Page([StudyRecord.of(r) for r in rows], total, limit, offset)

    def study_snapshot(self, study_id: int) -> tuple[StudyRecord, list[TrialPoint]]:
        """A study and all its trials (by number) as of one moment, read without taking its lock: each trial's
        configuration, status and score only (what a proposer needs; the whole rows cost ten times more)."""
        with self._read() as session:
            row = session.get(StudyRow, study_id)
            if row is None:
                raise NotFound("study", study_id)
            trials = session.execute(
                select(TrialRow.number, TrialRow.status, TrialRow.hyperparameters, TrialRow.score)
                .where(TrialRow.study_id == study_id)
                .order_by(TrialRow.number)
            )
            return StudyRecord.of(row), [TrialPoint(*t) for t in trials]

    @contextmanager
    def proposal_lease(self, study_id: int, wait_s: float = 0.0) -> Iterator[str | None]:
        """Whether this process may fit the study's model now: on PostgreSQL, one process at a time per study
        (a session advisory lock held on its own connection, so that a process that dies releases it with its
        connection); on SQLite, always (one machine's workers).

        Yields :data:`LEASE_FREE` when it was taken at once, None when another process holds it (after waiting
        for it at most ``wait_s``), and :data:`LEASE_AFTER_FIT` when it was taken after waiting: another process
        held it meanwhile, so its fit may have proposed for this one too (see :meth:`proposal_waiters`). The
        waiting processes are granted the lease one at a time, in the order they began to wait."""
        if is_sqlite(self.engine):
            yield LEASE_FREE
            return
        with self.engine.connect() as conn:
            key = (PROPOSAL_LOCK_CLASS, study_id)
            lease: str | None = LEASE_FREE
            if not conn.execute(select(func.pg_try_advisory_lock(*key))).scalar():
                lease = LEASE_AFTER_FIT if wait_s > 0 and _wait_for_lock(conn, key, wait_s) else None
            conn.commit()  # no transaction stays open while the lease is held
            try:
                yield lease
            finally:
                if lease is not None:
                    try:
                        conn.execute(select(func.pg_advisory_unlock(*key)))
                        conn.commit()
                    except Exception:
                        conn.invalidate()  # closing the connection releases the lock
                        raise

    def proposal_waiters(self, study_id: int) -> int:
        """How many processes wait right now for the study's :meth:`proposal_lease` (PostgreSQL's lock table);
        0 on SQLite, which has no lease."""
        if is_sqlite(self.engine):
            return 0
        with self.engine.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND classid = CAST(:kind AS oid) AND objid = CAST(:study AS oid) AND objsubid = 2"
                ),
                {"kind": PROPOSAL_LOCK_CLASS, "study": study_id},
            ).scalar()
            conn.rollback()
            return int(waiting or 0)

    def trial_counts(self, study_id: int) -> dict[str, int]:
        with self._read() as session:
            rows = session.execute(
                select(TrialRow.status, func.count()).where(TrialRow.study_id == study_id).group_by(TrialRow.status)
            )
            return {status: count for status, count in rows}

    def mean_trial_duration(self, study_id: int) -> float | None:
        """Mean seconds of the study's completed trials (for its ETA), or None before the first."""
        with self._read() as session:
            return session.scalar(
                select(func.avg(TrialRow.duration_s)).where(
                    TrialRow.study_id == study_id, TrialRow.status == "completed", TrialRow.duration_s.is_not(None)
                )
            )

    def cancel_study(self, study_id: int) -> StudyRecord:
        """Mark a study cancelled; its running trials stop at their next epoch end."""

        def attempt() -> StudyRecord:
            with self.locked_study(study_id) as tx:
                if tx.study.is_terminal:
                    raise Conflict(f"study {study_id} is already {tx.study.status}")
                tx.set_status("cancelled")
                tx._session.execute(
                    update(TrialRow)
                    .where(TrialRow.study_id == study_id, TrialRow.status.in_(("running", "pending")))
                    .values(stop_requested=True)
                )
                tx._session.execute(
                    update(TrialRow)
                    .where(TrialRow.study_id == study_id, TrialRow.status == "pending")
                    .values(status="cancelled", finished_at=utcnow())
                )
                return tx.study

        return self._retrying(attempt)

    def control_study(self, study_id: int, *, action: str | None = None, priority: str | None = None) -> StudyRecord:
        """Pause, resume or re-prioritise a study; takes effect at the next claim."""

        def change(tx: StudyTransaction) -> StudyRecord:
            study = tx.study
            if study.is_terminal:
                raise Conflict(f"study {study_id} is already {study.status}")
            if action == "pause":
                if study.is_paused:
                    raise Conflict(f"study {study_id} is already paused")
                tx.set_status("paused")
            elif action == "resume":
                if not study.is_paused:
                    raise Conflict(f"study {study_id} is not paused")
                tx.set_status("running" if study.started_at else "queued")
            if priority is not None:
                tx.set_priority(priority)
            return tx.study

        return self.with_study_lock(study_id, change)

    @contextmanager
    def locked_study(
        self,
        study_id: int,
        *,
        skip_locked: bool = False,
        before: Any = None,
        or_later: Sequence[int] = (),
        optimistic: bool = False,
    ) -> Iterator[StudyTransaction | None]:
        """Hold the study's row lock (``FOR UPDATE``; an immediate transaction on SQLite). With
        ``skip_locked``, yield None instead of waiting when another transaction holds it (PostgreSQL); with
        ``or_later`` too (ids above ``study_id``), the first of them by id that no other transaction holds, in the
        same statement (a claim's candidates of one rank: one transaction, not one per study found locked).
        ``before(session)`` runs first in the same transaction (to take a lock that comes before studies').
        ``optimistic`` (a claim): the study's trial load is read in the same statement (see
        :meth:`StudyTransaction.load`), and a random draw may be inserted without a lookup
        (:meth:`StudyTransaction.expect_free`); either may raise :class:`ClaimAgain`."""
        started = time.perf_counter()
        with self._write() as session:
            if before is not None:
                before(session)
            ids = [study_id, *or_later] if or_later else study_id
            statement = _LOCK_STUDY[skip_locked, bool(or_later), optimistic]
            row = session.connection().execute(statement, {"ids": ids}).first()
            if self.on_lock_wait is not None:
                self.on_lock_wait(time.perf_counter() - started)
            if row is None and not skip_locked:
                raise NotFound("study", study_id)
            if row is None:
                yield None
                return
            load = Load(row.load_total, row.load_running or 0, row.load_pending or 0) if optimistic else None
            tx = StudyTransaction(session, StudyRecord.of(row), load)
            yield tx
            tx.write_study()

    def with_study_lock(
        self,
        study_id: int,
        fn: Any,
        *,
        skip_locked: bool = False,
        before: Any = None,
        or_later: Sequence[int] = (),
        optimistic: bool = False,
    ) -> Any:
        """Run ``fn(tx)`` under the study's lock, retrying on lock conflicts; with ``before``,
        ``fn(tx, before(session))``, ``before`` run in the same transaction ahead of the study's lock. With
        ``skip_locked``, answer :data:`LOCKED` at once if another transaction holds the lock (or the study is
        gone); with ``or_later`` too, the first of those studies whose lock is free (``tx.study`` says which)."""

        def attempt() -> Any:
            first: list[Any] = []  # what ``before`` answered in this attempt's transaction
            with self.locked_study(
                study_id,
                skip_locked=skip_locked,
                before=None if before is None else lambda s: first.append(before(s)),
                or_later=or_later,
                optimistic=optimistic,
            ) as tx:
                if tx is None:
                    return LOCKED
                return fn(tx) if before is None else fn(tx, first[0])

        return self._retrying(attempt)

    # -- reports without the study's lock (PostgreSQL) -------------------------------------------
    def study_facts(self, study_id: int) -> StudyFacts | None:
        """The study's :class:`StudyFacts` (kept once read), or None if there is no such study or the database is
        not PostgreSQL (only there can a report be stored without the study's lock, see :meth:`report_unlocked`)."""
        if self.engine.dialect.name != "postgresql":
            return None
        facts = self._facts.get(study_id)
        if facts is None:
            with self._statements() as session:
                row = session.connection().execute(_FACTS, {"study_id": study_id}).first()
            if row is None:
                return None
            if len(self._facts) >= 10_000:
                self._facts.clear()
            facts = self._facts[study_id] = StudyFacts(*row)
        return facts

    def report_unlocked(
        self,
        study_id: int,
        trial_id: int,
        facts: StudyFacts,
        *,
        status: str,
        score: float,
        best_epoch: int | None,
        metrics: dict[str, Any] | None,
        model_path: str | None,
        environment: dict[str, Any] | None,
    ) -> Reported | None:
        """Store a running trial's scored result in one statement, outside any transaction and without the study's
        lock (PostgreSQL; see :func:`_finish_unlocked`); None when the trial is not running (or not the study's).

        A claim counts a study's running trials under the study's lock; a report made meanwhile only lowers that
        count, so without the lock a claim can at worst see one trial more running than there is. What needs the
        lock is left to the caller: a study whose budget is spent is completed under it, after this report is
        committed (:func:`tuner_service.search.finish_trial`)."""
        params = _report_params(
            study_id, facts.direction, trial_id, status, score, best_epoch, metrics, None, model_path, environment
        )
        params["ranked"] = status in RANKED_TRIAL
        with self._statements() as session:
            row = session.connection().execute(_finish_unlocked(), params).first()
        if row is None:
            return None
        load = Load(row.load_total, row.load_running - 1, row.load_pending)
        return Reported(TrialRecord.of(row), load, row.study_status, row.study_max_trials)

    # -- trials -------------------------------------------------------------------------------
    def get_trial(self, study_id: int, trial_id: int) -> TrialRecord:
        with self._read() as session:
            row = session.get(TrialRow, trial_id) if is_id(trial_id) else None
            if row is None or row.study_id != study_id:
                raise NotFound("trial", trial_id)
            return TrialRecord.of(row)

    def trial_by_number(self, study_id: int, number: int) -> TrialRecord:
        """The trial that users see as ``number`` in its study (the number on leaderboards, in URLs and the CLI)."""
        with self._read() as session:
            row = session.scalar(select(TrialRow).where(TrialRow.study_id == study_id, TrialRow.number == number))
            if row is None:
                raise NotFound("trial", number)
            return TrialRecord.of(row)

    def trial_numbers(self, trial_ids: list[int]) -> dict[int, int]:
        """Each trial's number in its study, by id, in one query (for listings that name best trials)."""
        if not trial_ids:
            return {}
        with self._read() as session:
            rows = session.execute(select(TrialRow.id, TrialRow.number).where(TrialRow.id.in_(trial_ids)))
            return {trial_id: number for trial_id, number in rows}

    def list_trials(
        self,
        study_id: int,
        *,
        status: str | None = None,
        sort: str = "score",
        descending: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        column = TRIAL_SORTS[sort]
        order = column.desc() if descending else column.asc()
        query = select(TrialRow).where(TrialRow.study_id == study_id)
        if status:
            query = query.where(TrialRow.status == status)
        with self._read() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(order.nulls_last(), TrialRow.number).limit(limit).offset(offset))
            return Page([TrialRecord.of(r) for r in rows], total, limit, offset)

    def epochs(self, trial_id: int) -> list[EpochRecord]:
        with self._read() as session:
            rows = session.scalars(
                select(EpochRow).where(EpochRow.trial_id == trial_id).order_by(EpochRow.execution, EpochRow.epoch)
            )
            return [EpochRecord.of(r) for r in rows]

    def study_epochs(self, study_id: int, trial_ids: list[int] | None = None) -> dict[int, list[EpochRecord]]:
        """The trials' epochs of the first execution (all trials, or ``trial_ids``), by trial id, in one query."""
        query = (
            select(EpochRow)
            .join(TrialRow, TrialRow.id == EpochRow.trial_id)
            .where(TrialRow.study_id == study_id, EpochRow.execution == 0)
            .order_by(EpochRow.trial_id, EpochRow.epoch)
        )
        if trial_ids is not None:
            query = query.where(EpochRow.trial_id.in_(trial_ids))
        out: dict[int, list[EpochRecord]] = {}
        with self._read() as session:
            for row in session.scalars(query):
                out.setdefault(row.trial_id, []).append(EpochRecord.of(row))
        return out

    def record_epoch(
        self, trial_id: int, execution: int, epoch: int, metrics: dict[str, float], *, ticket: str | None = None
    ) -> TrialControl:
        """Store one epoch's metrics, refresh the heartbeat, and say whether training should stop.

        With ``ticket``, a worker whose trial was handed to another worker meanwhile (the reaper took it for
        dead) is told to stop instead of writing over the new run's epochs.
        """
        metrics = clean_json(metrics)

        def attempt() -> TrialControl:
            with self._write() as session:
                trial = session.get(TrialRow, trial_id)
                if trial is None:
                    return TrialControl(stop=True, reason="trial no longer exists")
                if ticket is not None and (trial.ticket != ticket or trial.status != "running"):
                    return TrialControl(stop=True, reason="trial taken over by another worker")
                existing = session.scalar(
                    select(EpochRow).where(
                        EpochRow.trial_id == trial_id,
                        EpochRow.execution == execution,
                        EpochRow.epoch == epoch,
                    )
                )
                if existing is None:
                    session.add(EpochRow(trial_id=trial_id, execution=execution, epoch=epoch, metrics=metrics))
                    trial.epochs_trained += 1
                else:
                    existing.metrics = metrics
                trial.heartbeat_at = utcnow()
                trial.epochs_run = max(trial.epochs_run, epoch + 1)
                study_status = session.scalar(select(StudyRow.status).where(StudyRow.id == trial.study_id))
                if study_status == "cancelled":
                    return TrialControl(stop=True, reason="study cancelled")
                if trial.stop_requested:
                    return TrialControl(stop=True, reason="stop requested")
                return TrialControl(stop=False)

        return self._retrying(attempt)

    def objective_curves(self, study_id: int, objective: str, *, exclude_trial_id: int) -> list[list[float | None]]:
        """Each other trial's objective per epoch (first execution), indexed by absolute epoch."""
        query = (
            select(EpochRow.trial_id, EpochRow.epoch, EpochRow.metrics)
            .join(TrialRow, TrialRow.id == EpochRow.trial_id)
            .where(TrialRow.study_id == study_id, EpochRow.trial_id != exclude_trial_id, EpochRow.execution == 0)
        )
        curves: dict[int, dict[int, float | None]] = {}
        with self._read() as session:
            for trial_id, epoch, metrics in session.execute(query):
                curves.setdefault(trial_id, {})[epoch] = metrics.get(objective)
        return [[points.get(e) for e in range(max(points) + 1)] for points in curves.values() if points]

    def heartbeat(self, trial_id: int) -> None:
        def attempt() -> None:
            with self._write() as session:
                session.execute(update(TrialRow).where(TrialRow.id == trial_id).values(heartbeat_at=utcnow()))

        self._retrying(attempt)

    def stale_trials(self, older_than_s: float) -> list[TrialRecord]:
        """Running trials whose worker has not reported for ``older_than_s`` seconds."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self._read() as session:
            rows = session.scalars(select(TrialRow).where(TrialRow.status == "running", TrialRow.heartbeat_at < cutoff))
            return [TrialRecord.of(r) for r in rows]

    def requeue_trial(self, study_id: int, trial_id: int, *, max_retries: int, reason: str) -> str:
        """Send an abandoned trial back to the queue, or fail it once retries are spent."""

        def change(tx: StudyTransaction) -> str:
            trial = tx.trial(trial_id)
            if trial.status != "running":
                return trial.status
            row = tx._row(trial_id)
            if tx.study.is_terminal:
                row.status, row.finished_at, row.error = "cancelled", utcnow(), reason
            elif row.retries >= max_retries:
                row.status, row.finished_at = "failed", utcnow()
                row.error = f"{reason}; gave up after {row.retries} retries"
            else:
                row.status, row.retries, row.error = "pending", row.retries + 1, reason
            return row.status

        return self.with_study_lock(study_id, change)

    def preempt_trial(
        self, study_id: int, trial_id: int, *, ticket: str, resume: tuple[int, int] | None, reason: str
    ) -> str:
        """Hand a trial back to the queue because its worker is stopping: ``pending`` at once, retries unchanged.

        ``resume`` is (execution, epoch) where the worker saved a checkpoint; ``None`` keeps the previous resume
        point (if any). Only the worker holding the trial (``ticket``) may do this; returns the trial's status.
        """

        def change(tx: StudyTransaction) -> str:
            row = tx._row(trial_id)
            if row.status != "running" or row.ticket != ticket:
                return row.status
            if tx.study.is_terminal:
                row.status, row.finished_at, row.error = "cancelled", utcnow(), reason
                return row.status
            row.status, row.error, row.worker = "pending", reason, None
            if resume is not None:
                row.resume_execution, row.resume_epoch = resume
            return row.status

        return self.with_study_lock(study_id, change)

    def mark_enqueued(self, study_id: int) -> None:
        """Remember when work for the study was last put on the broker."""

        def attempt() -> None:
            with self._write() as session:
                session.execute(update(StudyRow).where(StudyRow.id == study_id).values(enqueued_at=utcnow()))

        self._retrying(attempt)

    def quiet_studies(self, idle_s: float) -> set[int]:
        """Active studies for which nothing was put on the broker for ``idle_s`` (or ever)."""
        cutoff = utcnow() - timedelta(seconds=idle_s)
        query = select(StudyRow.id).where(
            StudyRow.status.in_(("queued", "running")),
            (StudyRow.enqueued_at.is_(None)) | (StudyRow.enqueued_at < cutoff),
        )
        with self._read() as session:
            return set(session.scalars(query))

    # -- leaderboards -------------------------------------------------------------------------
    def leaderboard(
        self,
        *,
        study_id: int | None = None,
        dataset_id: int | None = None,
        task_type: str | None = None,
        objective_name: str | None = None,
        team_id: int | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> Page:
        """Finished trials best-first, per study or across studies; each row names its study."""
        query: Select[Any] = (
            select(TrialRow, StudyRow.name, StudyRow.direction, StudyRow.task_type)
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            # The same literal text as the partial indexes' predicate, so the planner can always match them
            # (with bound parameters a generic prepared plan could not prove the predicate holds).
            .where(RANKED_TRIALS)
        )
        if study_id is not None:
            query = query.where(TrialRow.study_id == study_id)
        if dataset_id is not None:
            query = query.where(TrialRow.dataset_id == dataset_id)
        if objective_name is not None:
            query = query.where(TrialRow.objective_name == objective_name)
        if task_type is not None:
            query = query.where(StudyRow.task_type == task_type)
        if team_id is not None:
            query = query.where(TrialRow.team_id == team_id)
        with self._read() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.execute(
                query.order_by(TrialRow.sort_key.asc(), TrialRow.id.asc()).limit(limit).offset(offset)
            )
            items = []
            for rank, (trial, study_name, direction, task_type_) in enumerate(rows, start=offset + 1):
                items.append(
                    {
                        "rank": rank,
                        "study_id": trial.study_id,
                        "study_name": study_name,
                        "task_type": task_type_,
                        "trial_id": trial.id,
                        "number": trial.number,
                        "status": trial.status,
                        "objective": trial.objective_name,
                        "direction": direction,
                        "score": trial.score,
                        "best_epoch": human_epoch(trial.best_epoch),
                        "epochs_run": trial.epochs_run,
                        "epochs_trained": trial.epochs_trained,
                        "duration_s": trial.duration_s,
                        "hyperparameters": trial.hyperparameters,
                        "metrics": trial.metrics,
                    }
                )
            return Page(items, total, limit, offset)

    def study_directory(self, artifacts: Path, study_id: int) -> Path:
        return artifacts / "studies" / str(study_id)


def _wait_for_lock(conn: Any, key: tuple[int, int], wait_s: float) -> bool:
    """Take the session advisory lock ``key``, waiting at most ``wait_s``; whether it was taken."""
    conn.execute(select(func.set_config("lock_timeout", f"{max(1, round(wait_s * 1000))}ms", True)))
    try:
        conn.execute(select(func.pg_advisory_lock(*key)))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available: the timeout
            raise
        conn.rollback()
        return False
    return True


def _is_lock_error(exc: OperationalError) -> bool:
    text = str(exc.orig).lower() if exc.orig else str(exc).lower()
    return "locked" in text or "deadlock" in text or "busy" in text


__all__ = ["Store", "StudyTransaction", "FINISHED_TRIAL", "TRIAL_STATUSES", "STUDY_STATUSES", "sort_key"]
