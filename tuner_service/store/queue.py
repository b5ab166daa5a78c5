"""Queries behind the shared queue (mixed into :class:`~tuner_service.store.Store`)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import DateTime, Select, and_, bindparam, case, cast, func, literal_column, null, or_, select, union_all
from sqlalchemy.orm import Session

from tuner_service.queue import TeamLoad, WaitingStudy
from tuner_service.store.models import StudyRow, TeamRow, TrialRow, as_utc, utcnow


class Started(NamedTuple):
    """The trial a broker message already started (its ticket's): which one, in which study."""

    id: int
    study_id: int


class Load(NamedTuple):
    """A study's trials: all of them, and those running and pending."""

    total: int
    running: int
    pending: int


def trial_load(study_id: Any) -> tuple[Any, Any, Any]:
    """SQL for a study's :class:`Load`. The trials are numbered 0, 1, ... as they are created (and never deleted
    alone), so the total is the highest number plus one: an index lookup, where a count would read every row;
    running and pending trials are index ranges of (study, status)."""
    total = select(func.coalesce(func.max(TrialRow.number) + 1, 0)).where(TrialRow.study_id == study_id)
    counted = [
        select(func.count()).where(TrialRow.study_id == study_id, TrialRow.status == status)
        for status in ("running", "pending")
    ]
    return total.scalar_subquery(), counted[0].scalar_subquery(), counted[1].scalar_subquery()


# The class of the PostgreSQL advisory locks that serialize claims of one team with a quota (key: team id).
TEAM_LOCK_CLASS = 0x7475_6E65
# The class of the advisory locks that let one process at a time fit a study's model (key: study id).
PROPOSAL_LOCK_CLASS = 0x7475_6E66


def snapshot(
    session: Session, pool: str | None, window_s: float, team_id: int | None = None
) -> tuple[list[WaitingStudy], dict[int | None, TeamLoad]]:
    """Studies that may want trials (in ``pool``; of ``team_id`` if given) and every team's load."""
    return waiting_studies(session, pool, team_id), team_loads(session, window_s)


def waiting_studies(session: Session, pool: str | None, team_id: int | None = None) -> list[WaitingStudy]:
    """The active studies (in ``pool``; of ``team_id`` if given) with their trial loads."""
    core = session.connection()  # Core rows: every claim reads this, and the ORM's per-statement work is a third
    params = {"pool": pool, "team_id": team_id}
    return [_waiting(*study) for study in core.execute(_study_query(pool is not None, team_id is not None), params)]


def _waiting(
    id_: int, name: str, team_id: int | None, priority: str, pool: str, status: str, parallelism: int,
    max_trials: int, total: int, running: int | None, pending: int | None,
) -> WaitingStudy:  # fmt: skip
    """A row of :func:`_study_columns` as the scheduler sees it."""
    owed = int(pending or 0) + max(0, max_trials - total)
    return WaitingStudy(id_, name, team_id, priority, pool, status, int(running or 0), parallelism, owed)


@functools.cache
def _study_query(by_pool: bool, by_team: bool) -> Select:
    """The active studies with their trials counted by status, in one statement; built once per process (with
    bound parameters) because building it costs more than running it."""
    query = select(*_study_columns()).where(_ACTIVE)
    if by_pool:
        query = query.where(StudyRow.pool == bindparam("pool"))
    if by_team:
        query = query.where(StudyRow.team_id == bindparam("team_id"))
    return query


# The studies the scheduler looks at.
_ACTIVE = StudyRow.status.in_(("queued", "running", "paused"))


def _study_columns() -> tuple[Any, ...]:
    """What the scheduler reads of a study (see :func:`_waiting`)."""
    # Only the columns the scheduler needs (a study row also carries its spec and its oracle's state), and each
    # study's trial load from indexes (see trial_load): counting the trials themselves grew with every finished
    # one (4 ms of the database's time per claim with 10,000 trials in the active studies).
    columns = (StudyRow.id, StudyRow.name, StudyRow.team_id, StudyRow.priority, StudyRow.pool, StudyRow.status)
    return (*columns, StudyRow.parallelism, StudyRow.max_trials, *trial_load(StudyRow.id))


def team_loads(session: Session, window_s: float, team_id: int | None = None) -> dict[int | None, TeamLoad]:
    """Each team's worker time within the window (running trials count up to now) and today's GPU hours;
    only ``team_id``'s (and the no-team entry) when given.

    Summed by the database, one row per team and pool: every claim reads this, and a team's trials of the
    last day may be thousands.
    """
    return _team_loads(session, window_s, team_id)[1]


def _team_loads(
    session: Session,
    window_s: float,
    team_id: int | None = None,
    ticket: str | None = None,
    pool: str | None = None,
    settled: SettledLoads | None = None,
) -> tuple[Started | None, dict[int | None, TeamLoad], list[WaitingStudy]]:
    """:func:`team_loads`; with ``ticket`` the trial that ticket started, and with ``pool`` the pool's waiting
    studies (:func:`waiting_studies`), both read in the same statement (not with ``team_id``). With ``settled``
    (not with ``team_id``), the trials that finished before the last read are taken from it rather than summed
    again: the statement reads only the running trials and those that finished since (see :class:`SettledLoads`)."""
    now = utcnow()
    core = session.connection()
    params = {"now": now, "cutoff": now - timedelta(seconds=window_s), "day": now - timedelta(days=1)}
    params["team_id"], params["ticket"], params["pool"] = team_id, ticket, pool
    started = None
    teams = []
    studies: list[WaitingStudy] = []
    dialect = session.get_bind().dialect.name
    if team_id is not None:
        sums = list(core.execute(_team_load_query(dialect), params))
        teams = list(core.execute(_one_team_query(), params))
    else:  # every team: the sums, the teams (the ticket's trial, the studies) in one statement, as every claim reads
        base = settled.start(now) if settled is not None else None
        params["upto"] = now - timedelta(seconds=SETTLE_MARGIN_S)
        params["since"] = base.since if base is not None else None
        sums = list(base.sums) if base is not None else []
        fresh: list[Any] = []  # the rows of trials that settled in this read
        query = _teams_and_loads_query(dialect, ticket is not None, pool is not None, base is not None)
        for kind, *row in core.execute(query, params):
            if kind == "ticket":
                started = Started(row[0], row[2])
            elif kind in _LOAD_KINDS:
                sums.append(row[:5])
                if kind == "settled":
                    fresh.append(row[:5])
            elif kind == "team":
                teams.append(row[5:10])
            else:
                studies.append(_waiting(*row[10:]))
        if settled is not None:
            settled.finish(base, params["upto"], fresh)
    return started, _loads(sums, teams), studies


def _loads(sums: list[Any], teams: list[Any]) -> dict[int | None, TeamLoad]:
    """Every team's :class:`TeamLoad` from rows of (team, pool, running, seconds in the window, seconds in the
    day), several rows of one team and pool adding up, and the teams' rows."""
    usage: dict[int | None, float] = {}
    gpu: dict[int | None, float] = {}
    busy: dict[int | None, int] = {}
    for team, pool, count, in_window, in_day in sums:
        busy[team] = busy.get(team, 0) + int(count or 0)
        usage[team] = usage.get(team, 0.0) + float(in_window or 0.0)
        if pool == "gpu":
            gpu[team] = gpu.get(team, 0.0) + float(in_day or 0.0) / 3600
    loads: dict[int | None, TeamLoad] = {}
    for team_id_, name, share_weight, max_concurrent, gpu_hours in teams:
        loads[team_id_] = TeamLoad(
            team_id_, name, share_weight, usage.get(team_id_, 0.0), busy.get(team_id_, 0),
            max_concurrent, gpu.get(team_id_, 0.0), gpu_hours,
        )  # fmt: skip
    loads[None] = TeamLoad(None, "(no team)", 1.0, usage.get(None, 0.0), busy.get(None, 0))
    return loads


# A trial that finished this long before a claim's read is taken as settled: every later read finds it, so its
# seconds can be kept (see SettledLoads). The margin covers the time from a report's clock reading to its commit.
SETTLE_MARGIN_S = 0.5
# How often a process sums every trial of the window again rather than only those finished since its last read:
# this drops the trials that left the window since, and any that committed later than SETTLE_MARGIN_S after
# their finish (neither counts for more than this long).
SETTLED_REFRESH_S = 10.0
# The kinds of load row in a claim's read: running trials (counted up to now), trials that finished before the
# margin, and those that finished within it (read again by the next read).
_LOAD_KINDS = ("running", "settled", "recent")


@dataclass(frozen=True)
class _Settled:
    """The sums of the trials settled by ``since`` (rows as :func:`_loads` takes them), first read at ``read_at``
    (monotonic seconds)."""

    since: datetime
    sums: tuple[tuple[Any, ...], ...]
    read_at: float


@dataclass
class SettledLoads:
    """One process's sums of the finished trials in a fair-share window, kept between its claims.

    Every claim reads every team's load. Summed in full, that read costs more with every trial that finished in
    the window (2.5 ms of the database's time per claim with 1,500 of them, against 0.7 ms with 100), and at a
    few hundred claims a second the window fills quickly. A finished trial's seconds do not change, so each read
    sums only the running trials and those that finished since the previous read, and adds what the previous
    reads kept. Every :data:`SETTLED_REFRESH_S` a read sums the whole window again. Only the fair-share order
    uses these sums; a team's quota is checked against its exact load under the study's lock
    (:meth:`~tuner_service.store.store.StudyTransaction.team_load`).
    """

    _current: _Settled | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, now: datetime) -> _Settled | None:
        """What a read may take as known, or None when it should sum the whole window."""
        current = self._current
        if current is None or time.monotonic() - current.read_at > SETTLED_REFRESH_S or current.since > now:
            return None
        return current

    def finish(self, base: _Settled | None, upto: datetime, fresh: list[Any]) -> None:
        """Keep what a read that started from ``base`` found settled by ``upto`` (the ``fresh`` rows); a read
        whose ``base`` another thread's read replaced meanwhile keeps nothing (its answer stays right)."""
        with self._lock:
            if base is None:
                self._current = _Settled(upto, tuple(fresh), time.monotonic())
            elif self._current is base and upto > base.since:
                self._current = _Settled(upto, _merged(base.sums, fresh), base.read_at)


def _merged(sums: tuple[tuple[Any, ...], ...], fresh: list[Any]) -> tuple[tuple[Any, ...], ...]:
    """``sums`` with the ``fresh`` rows added, one row per team and pool."""
    if not fresh:
        return sums
    totals: dict[tuple[Any, Any], list[float]] = {}
    for team, pool, _, in_window, in_day in (*sums, *fresh):
        total = totals.setdefault((team, pool), [0.0, 0.0])
        total[0] += float(in_window or 0.0)
        total[1] += float(in_day or 0.0)
    return tuple((team, pool, 0, window, day) for (team, pool), (window, day) in totals.items())


@functools.cache
def _team_load_query(dialect: str) -> Select:
    """:func:`_summed` for the team ``:team_id`` alone (built once per process, like :func:`_study_query`)."""
    return _summed(dialect).where(TrialRow.team_id == bindparam("team_id"))


def _summed(dialect: str, *leading: Any, trailing: tuple[Any, ...] = (), kinds: str | None = None) -> Select:
    """Worker seconds per team and pool: in the window from ``:cutoff`` and in the day from ``:day``, up to
    ``:now`` for running trials; ``leading`` and ``trailing`` columns around them. ``kinds`` ("full" or
    "since"): the first column says each row's kind (:data:`_LOAD_KINDS`: running, finished by ``:upto``, finished
    later); "since" reads only the running trials and those that finished after ``:since``."""
    now, cutoff, day = (bindparam(name, type_=DateTime(timezone=True)) for name in ("now", "cutoff", "day"))
    running = TrialRow.status == "running"
    end = case((running, now), else_=TrialRow.finished_at)
    kind: tuple[Any, ...] = ()
    if kinds is not None:
        upto = bindparam("upto", type_=DateTime(timezone=True))
        # Literal SQL, not bound values: the GROUP BY must repeat the select's expression exactly.
        named = {k: literal_column(f"'{k}'") for k in _LOAD_KINDS}
        settled = TrialRow.finished_at <= upto
        kind = (case((running, named["running"]), (settled, named["settled"]), else_=named["recent"]),)
    if kinds == "since":
        counted = or_(running, TrialRow.finished_at > bindparam("since", type_=DateTime(timezone=True)))
    else:
        counted = or_(
            running,
            TrialRow.finished_at >= cutoff,
            and_(TrialRow.pool == "gpu", TrialRow.finished_at >= day),  # only GPU hours look back a day
        )
    return (
        select(
            *kind,
            *leading,
            TrialRow.team_id,
            TrialRow.pool,
            func.sum(case((running, 1), else_=0)),
            func.sum(_seconds_after(dialect, end, TrialRow.started_at, cutoff)),
            func.sum(_seconds_after(dialect, end, TrialRow.started_at, day)),
            *trailing,
        )
        .where(TrialRow.started_at.is_not(None), counted)
        .group_by(*kind, TrialRow.team_id, TrialRow.pool)
    )


@functools.cache
def _teams_and_loads_query(dialect: str, with_ticket: bool, with_studies: bool = False, since: bool = False) -> Any:
    """:func:`_summed`'s rows and every team's, as one statement: (kind, team, pool, running, seconds in the
    window, seconds in the day, five nulls), kind one of :data:`_LOAD_KINDS` (``since``: only the trials running
    or finished after ``:since``), or ("team", five nulls, id, name, share weight, quota, GPU
    hours); ``with_ticket``, also ("ticket", trial id, null, study id, seven nulls) for the trial with
    ``:ticket``; ``with_studies``, also ("study", ten nulls, the :func:`_study_columns` of an active study of
    ``:pool``) and eleven nulls more in every other row (each column keeps one type across the parts)."""
    nothing = (null(), null(), null(), null(), null())
    # Typed nulls: PostgreSQL gives a column that is null in the first parts the type text.
    no_study = tuple(cast(null(), column.type) for column in _study_columns()) if with_studies else ()
    team = (TeamRow.id, TeamRow.name, TeamRow.share_weight, TeamRow.max_concurrent_trials, TeamRow.gpu_hours_per_day)
    parts = [
        _summed(dialect, trailing=(*nothing, *no_study), kinds="since" if since else "full"),
        select(literal_column("'team'"), *nothing, *team, *no_study),
    ]
    if with_ticket:
        trial = select(
            literal_column("'ticket'"), TrialRow.id, null(), TrialRow.study_id, null(), null(), *nothing, *no_study
        )
        parts.append(trial.where(TrialRow.ticket == bindparam("ticket")))
    if with_studies:
        study = select(literal_column("'study'"), *nothing, *nothing, *_study_columns())
        parts.append(study.where(_ACTIVE, StudyRow.pool == bindparam("pool")))
    return union_all(*parts)


@functools.cache
def _one_team_query() -> Select:
    columns = (TeamRow.id, TeamRow.name, TeamRow.share_weight, TeamRow.max_concurrent_trials, TeamRow.gpu_hours_per_day)
    return select(*columns).where(TeamRow.id == bindparam("team_id"))


def _seconds_after(dialect: str, end: Any, start: Any, since: Any) -> Any:
    """SQL for the seconds of [start, end] after ``since`` (0 if none), on PostgreSQL or SQLite."""
    if dialect == "postgresql":
        return func.greatest(0.0, func.extract("epoch", end - func.greatest(start, since)))
    # SQLite: timestamps are ISO strings in one format, so max() of two is the later one.
    return func.max(0.0, (func.julianday(end) - func.julianday(func.max(start, since))) * 86400.0)


class QueueQueries:
    """The queue's reads; expects ``engine`` and ``_read``.

    There is no deployment-wide lock: a claim reads the queue (this snapshot), then tries the studies it
    may serve in order, each under its own row lock, and re-checks there what the snapshot said."""

    engine: Any
    _read: Any
    _settled: dict[float, SettledLoads]  # by fair-share window: what this process's claims read last

    # Called with the seconds each claim waited for a study's lock (benchmarks and metrics may set it).
    on_lock_wait: Callable[[float], None] | None = None

    @contextmanager
    def _statements(self) -> Iterator[Session]:
        """A session for reads that share no snapshot: on PostgreSQL its statements run without a transaction
        (under READ COMMITTED each statement of a transaction takes its own snapshot anyway), which saves the
        BEGIN and COMMIT round trips on every claim's queue read; elsewhere a read transaction."""
        if self.engine.dialect.name != "postgresql":
            with self._read() as session:
                yield session
            return
        with (
            self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
            Session(bind=conn) as session,
        ):
            yield session

    def queue_snapshot(
        self, pool: str | None, window_s: float, team_id: int | None = None
    ) -> tuple[list[WaitingStudy], dict[int | None, TeamLoad]]:
        with self._read() as session:
            return snapshot(session, pool, window_s, team_id)

    def claim_view(
        self, ticket: str, pool: str, window_s: float
    ) -> tuple[Started | None, list[WaitingStudy], dict[int | None, TeamLoad]]:
        """What a claim reads first: the trial this broker message (its ticket) already started, if any, else
        the pool's queue (see :func:`snapshot`). One statement: the ticket's trial and the pool's studies come
        with the teams' loads."""
        settled = self._settled.get(window_s) or self._settled.setdefault(window_s, SettledLoads())
        with self._statements() as session:
            started, loads, studies = _team_loads(session, window_s, ticket=ticket, pool=pool, settled=settled)
            if started is not None:
                return started, [], {}
            return None, studies, loads

    def pool_has_work(self, pool: str) -> bool:
        """Whether some active study of the pool still owes trials (quotas aside). A worker asks after every
        trial: one statement, the studies only (no team loads, and on PostgreSQL no transaction)."""
        with self._statements() as session:
            waiting = waiting_studies(session, pool)
        return any(s.owed > 0 and s.status != "paused" for s in waiting)

    def running_trials(self, team_id: int | None = None) -> list[dict[str, Any]]:
        query = (
            select(TrialRow, StudyRow.name, StudyRow.team_id, TeamRow.name)
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .join(TeamRow, TeamRow.id == StudyRow.team_id, isouter=True)
            .where(TrialRow.status == "running")
            .order_by(TrialRow.started_at)
        )
        if team_id is not None:
            query = query.where(StudyRow.team_id == team_id)
        now = utcnow()
        with self._read() as session:
            return [
                {
                    "study_id": trial.study_id,
                    "study_name": study_name,
                    "team": team_name,
                    "trial_id": trial.id,
                    "number": trial.number,
                    "pool": trial.pool,
                    "worker": trial.worker,
                    "gpu": trial.gpu,
                    "gpu_slots": trial.gpu_slots,
                    "elapsed_s": round((now - as_utc(trial.started_at)).total_seconds(), 1)
                    if trial.started_at
                    else None,
                    "epochs_run": trial.epochs_run,
                    "epochs_trained": trial.epochs_trained,
                }
                for trial, study_name, _team_id, team_name in session.execute(query)
            ]

    def trial_statistics(self) -> dict[str, Any]:
        """Counts by pool and outcome, retries, and duration histograms of completed trials."""
        with self._read() as session:
            return _trial_statistics(session)

    def mean_trial_seconds(self, pool: str, last: int = 50) -> float | None:
        with self._read() as session:
            durations = list(
                session.scalars(
                    select(TrialRow.duration_s)
                    .where(TrialRow.pool == pool, TrialRow.status == "completed", TrialRow.duration_s.is_not(None))
                    .order_by(TrialRow.finished_at.desc())
                    .limit(last)
                )
            )
        return sum(durations) / len(durations) if durations else None

    def active_workers(self, pool: str, within_s: float = 600.0) -> int:
        """Workers seen on the pool recently (running a trial, or finishing one within ``within_s``)."""
        cutoff = utcnow() - timedelta(seconds=within_s)
        with self._read() as session:
            return (
                session.scalar(
                    select(func.count(func.distinct(TrialRow.worker))).where(
                        TrialRow.pool == pool,
                        or_(TrialRow.status == "running", TrialRow.finished_at >= cutoff),
                    )
                )
                or 0
            )


DURATION_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def _trial_statistics(session: Session) -> dict[str, Any]:
    from sqlalchemy import case

    finished: dict[tuple[str, str], int] = {}
    retries: dict[str, int] = {}
    for pool, status, count, retried in session.execute(
        select(TrialRow.pool, TrialRow.status, func.count(), func.coalesce(func.sum(TrialRow.retries), 0)).group_by(
            TrialRow.pool, TrialRow.status
        )
    ):
        if status not in ("running", "pending"):
            finished[(pool, status)] = count
        retries[pool] = retries.get(pool, 0) + int(retried)
    columns = [func.sum(case((TrialRow.duration_s <= bound, 1), else_=0)) for bound in DURATION_BUCKETS]
    durations: dict[str, tuple[list[tuple[str, float]], float]] = {}
    for row in session.execute(
        select(TrialRow.pool, func.count(), func.coalesce(func.sum(TrialRow.duration_s), 0.0), *columns)
        .where(TrialRow.status == "completed", TrialRow.duration_s.is_not(None))
        .group_by(TrialRow.pool)
    ):
        pool, count, total, *cumulative = row
        buckets = [(repr(bound), float(n or 0)) for bound, n in zip(DURATION_BUCKETS, cumulative, strict=True)]
        durations[pool] = (buckets + [("+Inf", float(count))], float(total))
    studies = dict(session.execute(select(StudyRow.status, func.count()).group_by(StudyRow.status)).all())
    return {"finished": finished, "retries": retries, "durations": durations, "studies": studies}
