"""Each team's load as the queue reads it on every claim (summed by the database), on SQLite and PostgreSQL:
worker seconds inside the fair-share window, running trials up to now, GPU hours of the last day."""

from __future__ import annotations

import functools
import time
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from tuner_service.store import Store
from tuner_service.store.models import TrialRow, utcnow
from tuner_service.store.queue import team_loads

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, settings) -> Store:
    url = settings.database_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store(url)
    store.upgrade()
    yield store
    store.dispose()


def _trial_row(study_id: int, number: int, status: str, dataset_id: int, **columns: object) -> TrialRow:
    """A trial row of the study as the tests here need it: no configuration, numbered ``number``."""
    return TrialRow(
        study_id=study_id, number=number, oracle_trial_id=str(number), ticket=f"{study_id}-{number}", status=status,
        hyperparameters={}, dataset_id=dataset_id, objective_name="val_accuracy", **columns,
    )  # fmt: skip


def test_team_loads_sum_window_seconds_running_trials_and_gpu_hours(any_store: Store) -> None:
    store = any_store
    alpha, beta = store.create_team("alpha").id, store.create_team("beta").id
    dataset = store.ensure_dataset("builtin:digits", "digits", "builtin", {"key": "builtin:digits"}).id
    study = {}
    for team, pool in [(alpha, "cpu"), (alpha, "gpu"), (beta, "cpu"), (None, "cpu")]:
        study[team, pool] = store.create_study(
            name=f"s-{team}-{pool}", dataset_id=dataset, task_type="multiclass", algorithm="random",
            objective_name="val_accuracy", direction="max", max_trials=10, parallelism=1, team_id=team,
            pool=pool, spec={},
        ).id  # fmt: skip
    now = utcnow()
    hour = 3600.0

    def ago(seconds: float):
        return now - timedelta(seconds=seconds)

    trials = [
        # team, pool, status, started (s ago), finished (s ago or None)
        (alpha, "cpu", "completed", 600, 300),  # 300 s, inside the window
        (alpha, "cpu", "completed", hour + 100, hour - 50),  # straddles the window's start: 50 s count
        (alpha, "cpu", "completed", 3 * hour, 2 * hour),  # before the window: 0 s
        (alpha, "cpu", "running", 120, None),  # running: up to now
        (alpha, "gpu", "completed", 2 * hour, hour),  # GPU: 0 s in the window, 1 h today
        (alpha, "gpu", "completed", 25 * hour, 23 * hour),  # GPU: 1 h of it within the last day
        (alpha, "gpu", "failed", 48 * hour, 47 * hour),  # older than a day: nothing
        (beta, "cpu", "cancelled", 200, 100),
        (beta, "cpu", "pending", None, None),  # never started: nothing
        (None, "cpu", "completed", 40, 10),
    ]
    with Session(store.engine) as session, session.begin():
        for number, (team, pool, status, started, finished) in enumerate(trials):
            session.add(
                _trial_row(
                    study[team, pool],
                    number,
                    status,
                    dataset,
                    team_id=team,
                    pool=pool,
                    started_at=None if started is None else ago(started),
                    finished_at=None if finished is None else ago(finished),
                )  # fmt: skip
            )
    with Session(store.engine) as session:
        loads = team_loads(session, window_s=hour)
    elapsed = (utcnow() - now).total_seconds()  # running trials count up to the moment of the query
    assert loads[alpha].running == 1
    assert loads[alpha].usage_s == pytest.approx(300 + 50 + 120, abs=elapsed + 0.01)
    assert loads[alpha].gpu_hours_today == pytest.approx(2.0, abs=1e-3)
    # SQLite subtracts Julian days (about 2.46 million, in a double): seconds come out within some 50 µs.
    seconds = functools.partial(pytest.approx, abs=1e-3)
    assert (loads[beta].running, loads[beta].usage_s, loads[beta].gpu_hours_today) == (0, seconds(100), 0.0)
    assert loads[None].usage_s == seconds(30)
    with Session(store.engine) as session:
        only = team_loads(session, window_s=hour, team_id=beta)
    assert set(only) == {beta, None} and only[beta].usage_s == seconds(100)


def test_a_claims_read_keeps_the_settled_trials_and_adds_only_those_finished_since(any_store, monkeypatch) -> None:
    """The claim's read (``claim_view``) sums only the trials running or finished since its previous read and adds
    what it kept: its loads stay those of a full sum as trials start and finish, a settled trial counts once, and
    the periodic full sum picks up a trial whose finish committed too late to be seen in order."""
    from tuner_service.store import queue

    monkeypatch.setattr(queue, "SETTLE_MARGIN_S", 0.05)
    store = any_store
    alpha, beta = store.create_team("alpha").id, store.create_team("beta").id
    dataset = store.ensure_dataset("builtin:digits", "digits", "builtin", {"key": "builtin:digits"}).id
    studies = {
        team: store.create_study(
            name=f"s-{team}", dataset_id=dataset, task_type="multiclass", algorithm="random",
            objective_name="val_accuracy", direction="max", max_trials=100, parallelism=4, team_id=team,
            pool="cpu", spec={},
        ).id
        for team in (alpha, beta)
    }  # fmt: skip
    numbers = iter(range(1000))
    hour = 3600.0

    def add(team: int, status: str, started_ago: float, finished_ago: float | None) -> int:
        now = utcnow()
        row = TrialRow(
            study_id=studies[team], number=next(numbers), oracle_trial_id="x", status=status, hyperparameters={},
            dataset_id=dataset, objective_name="val_accuracy", team_id=team, pool="cpu",
            started_at=now - timedelta(seconds=started_ago),
            finished_at=None if finished_ago is None else now - timedelta(seconds=finished_ago),
        )  # fmt: skip
        with Session(store.engine) as session, session.begin():
            session.add(row)
            session.flush()
            return row.id

    def finish(trial_id: int) -> None:
        with Session(store.engine) as session, session.begin():
            row = session.get(TrialRow, trial_id)
            row.status, row.finished_at = "completed", utcnow()

    def claims_view() -> dict:
        _, _, loads = store.claim_view("no such ticket", "cpu", hour)
        return {team: (loads[team].running, loads[team].usage_s) for team in (alpha, beta)}

    def full_sum() -> dict:
        with Session(store.engine) as session:
            loads = team_loads(session, window_s=hour)
        return {team: (loads[team].running, loads[team].usage_s) for team in (alpha, beta)}

    def same(seen: dict, exact: dict) -> bool:  # running trials count up to each read's own moment
        return all(seen[t][0] == exact[t][0] and abs(seen[t][1] - exact[t][1]) < 0.5 for t in exact)

    add(alpha, "completed", 600, 300)
    add(beta, "completed", hour + 100, hour - 50)  # straddles the window's start
    running = add(alpha, "running", 20, None)
    assert same(claims_view(), full_sum())  # the first read sums everything
    settled = store._settled[hour]._current
    assert settled is not None and sorted(row[0] for row in settled.sums) == [alpha, beta]

    finish(running)
    add(beta, "running", 5, None)
    quick = add(beta, "completed", 2, 0)  # finished now: within the margin, read again next time
    assert same(claims_view(), full_sum())
    time.sleep(0.1)  # past the margin: the next read keeps them
    for _ in range(3):  # kept once, not added again by later reads
        assert same(claims_view(), full_sum())
    kept = dict((row[0], row[3]) for row in store._settled[hour]._current.sums)
    assert kept[beta] == pytest.approx(50 + 2, abs=0.1) and quick

    # A finish committed long after its clock reading (here: a trial stored as finished a minute ago) falls
    # before what the reads already kept: missed until the next full sum, which every read makes once
    # SETTLED_REFRESH_S has passed.
    add(alpha, "completed", 120, 60)
    assert claims_view()[alpha][1] == pytest.approx(full_sum()[alpha][1] - 60, abs=0.5)
    monkeypatch.setattr(queue, "SETTLED_REFRESH_S", 0.0)
    assert same(claims_view(), full_sum())


def test_a_read_from_sums_another_thread_replaced_keeps_nothing() -> None:
    """Two threads' reads of one process may start from the same kept sums; the one that finishes second must
    not add its trials to sums that already hold the first one's (they may be the same trials)."""
    from tuner_service.store.queue import SettledLoads

    settled = SettledLoads()
    now = utcnow()
    settled.finish(None, now - timedelta(seconds=2), [(1, "cpu", 0, 10.0, 10.0)])
    base = settled.start(now)
    assert base is not None and base.sums == ((1, "cpu", 0, 10.0, 10.0),)
    settled.finish(base, now - timedelta(seconds=1), [(1, "cpu", 0, 5.0, 5.0), (2, "cpu", 0, 1.0, 1.0)])
    first = settled.start(now)
    assert sorted(first.sums) == [(1, "cpu", 0, 15.0, 15.0), (2, "cpu", 0, 1.0, 1.0)]
    settled.finish(base, now, [(1, "cpu", 0, 5.0, 5.0)])  # started from the replaced sums: ignored
    assert settled.start(now) is first


def test_a_pool_has_work_while_an_active_study_of_it_owes_trials(any_store: Store) -> None:
    """What a worker asks after each trial: some study of its pool that is not paused still owes a trial (its
    budget not spent, or a trial pending), whatever the other pool's studies owe."""
    store = any_store
    dataset = store.ensure_dataset("builtin:digits", "digits", "builtin", {"key": "builtin:digits"}).id

    def study(pool: str, max_trials: int) -> int:
        return store.create_study(
            name=f"s-{pool}-{max_trials}", dataset_id=dataset, task_type="multiclass", algorithm="random",
            objective_name="val_accuracy", direction="max", max_trials=max_trials, parallelism=1, pool=pool, spec={},
        ).id  # fmt: skip

    def trial(study_id: int, number: int, status: str) -> None:
        with Session(store.engine) as session, session.begin():
            session.add(_trial_row(study_id, number, status, dataset, pool="cpu"))

    assert not store.pool_has_work("cpu")
    study("gpu", 5)
    assert not store.pool_has_work("cpu") and store.pool_has_work("gpu")
    cpu = study("cpu", 1)
    assert store.pool_has_work("cpu")
    trial(cpu, 0, "running")  # the budget is taken by a running trial
    assert not store.pool_has_work("cpu")
    trial(cpu, 1, "pending")  # a trial handed back waits to be claimed again
    assert store.pool_has_work("cpu")
    store.control_study(cpu, action="pause")
    assert not store.pool_has_work("cpu")
