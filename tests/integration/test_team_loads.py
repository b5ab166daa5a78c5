"""Each team's load as the queue reads it on every claim (summed by the database), on SQLite and PostgreSQL:
worker seconds inside the fair-share window, running trials up to now, GPU hours of the last day."""

from __future__ import annotations

import functools
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
                TrialRow(
                    study_id=study[team, pool],
                    number=number,
                    oracle_trial_id=str(number),
                    ticket=f"t{number}",
                    status=status,
                    hyperparameters={},
                    dataset_id=dataset,
                    objective_name="val_accuracy",
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
