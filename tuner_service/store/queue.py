"""Queries behind the shared queue (mixed into :class:`~tuner_service.store.Store`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from tuner_service.queue import TeamLoad, WaitingStudy
from tuner_service.store.models import StudyRow, TeamRow, TrialRow, as_utc, utcnow
from tuner_service.store.records import TrialRecord

# The class of the PostgreSQL advisory locks that serialize claims of one team with a quota (key: team id).
TEAM_LOCK_CLASS = 0x7475_6E65


def snapshot(
    session: Session, pool: str | None, window_s: float, team_id: int | None = None
) -> tuple[list[WaitingStudy], dict[int | None, TeamLoad]]:
    """Studies that may want trials (in ``pool``; of ``team_id`` if given) and every team's load."""
    counts: dict[int, dict[str, int]] = {}
    # Only the columns the scheduler needs: a study row also carries its spec and its oracle's state.
    columns = (StudyRow.id, StudyRow.name, StudyRow.team_id, StudyRow.priority, StudyRow.pool, StudyRow.status)
    study_query = select(*columns, StudyRow.parallelism, StudyRow.max_trials).where(
        StudyRow.status.in_(("queued", "running", "paused"))
    )
    if pool is not None:
        study_query = study_query.where(StudyRow.pool == pool)
    if team_id is not None:
        study_query = study_query.where(StudyRow.team_id == team_id)
    studies = session.execute(study_query).all()
    if studies:
        ids = [s.id for s in studies]
        rows = session.execute(
            select(TrialRow.study_id, TrialRow.status, func.count())
            .where(TrialRow.study_id.in_(ids))
            .group_by(TrialRow.study_id, TrialRow.status)
        )
        for study_id, status, count in rows:
            counts.setdefault(study_id, {})[status] = count
    waiting = []
    for study in studies:
        by_status = counts.get(study.id, {})
        total = sum(by_status.values())
        owed = by_status.get("pending", 0) + max(0, study.max_trials - total)
        waiting.append(
            WaitingStudy(
                study.id,
                study.name,
                study.team_id,
                study.priority,
                study.pool,
                study.status,
                by_status.get("running", 0),
                study.parallelism,
                owed,
            )  # fmt: skip
        )
    return waiting, team_loads(session, window_s)


def team_loads(session: Session, window_s: float, team_id: int | None = None) -> dict[int | None, TeamLoad]:
    """Each team's worker time within the window (running trials count up to now) and today's GPU hours;
    only ``team_id``'s (and the no-team entry) when given."""
    now = utcnow()
    cutoff, day = now - timedelta(seconds=window_s), now - timedelta(days=1)
    earliest = min(cutoff, day)
    query = select(TrialRow.team_id, TrialRow.pool, TrialRow.status, TrialRow.started_at, TrialRow.finished_at).where(
        TrialRow.started_at.is_not(None),
        or_(TrialRow.status == "running", TrialRow.finished_at >= earliest),
    )
    team_query = select(TeamRow)
    if team_id is not None:
        query = query.where(TrialRow.team_id == team_id)
        team_query = team_query.where(TeamRow.id == team_id)
    rows = session.execute(query)
    usage: dict[int | None, float] = {}
    gpu: dict[int | None, float] = {}
    running: dict[int | None, int] = {}
    for team_id, pool, status, started, finished in rows:
        start, end = as_utc(started), as_utc(finished) if finished else now
        if status == "running":
            running[team_id] = running.get(team_id, 0) + 1
            end = now
        usage[team_id] = usage.get(team_id, 0.0) + max(0.0, (end - max(start, cutoff)).total_seconds())
        if pool == "gpu":
            gpu[team_id] = gpu.get(team_id, 0.0) + max(0.0, (end - max(start, day)).total_seconds()) / 3600
    loads: dict[int | None, TeamLoad] = {}
    for team in session.scalars(team_query):
        loads[team.id] = TeamLoad(
            team.id, team.name, team.share_weight, usage.get(team.id, 0.0), running.get(team.id, 0),
            team.max_concurrent_trials, gpu.get(team.id, 0.0), team.gpu_hours_per_day,
        )  # fmt: skip
    loads[None] = TeamLoad(None, "(no team)", 1.0, usage.get(None, 0.0), running.get(None, 0))
    return loads


class QueueQueries:
    """The queue's reads; expects ``engine`` and ``_read``.

    There is no deployment-wide lock: a claim reads the queue (this snapshot), then tries the studies it
    may serve in order, each under its own row lock, and re-checks there what the snapshot said."""

    engine: Any
    _read: Any

    # Called with the seconds each claim waited for a study's lock (benchmarks and metrics may set it).
    on_lock_wait: Callable[[float], None] | None = None

    def queue_snapshot(
        self, pool: str | None, window_s: float, team_id: int | None = None
    ) -> tuple[list[WaitingStudy], dict[int | None, TeamLoad]]:
        with self._read() as session:
            return snapshot(session, pool, window_s, team_id)

    def claim_view(
        self, ticket: str, pool: str, window_s: float
    ) -> tuple[TrialRecord | None, list[WaitingStudy], dict[int | None, TeamLoad]]:
        """What a claim reads first, in one transaction: the trial this broker message (its ticket) already
        started, if any, else the pool's queue (see :func:`snapshot`)."""
        with self._read() as session:
            row = session.scalar(select(TrialRow).where(TrialRow.ticket == ticket))
            if row is not None:
                return TrialRecord.of(row), [], {}
            return None, *snapshot(session, pool, window_s)

    def pool_has_work(self, pool: str) -> bool:
        """Whether some active study of the pool still owes trials (quotas aside)."""
        waiting, _ = self.queue_snapshot(pool, window_s=0.0)
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
