"""End to end for a team deployment: PostgreSQL store, Redis broker, two worker processes at once."""

from __future__ import annotations

import pytest

from tests.conftest import digits_study, slot_of, wait_for_study
from tuner_service.proposals import config_hash

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_workers_share_a_study_without_claiming_a_trial_twice(team, workers) -> None:
    settings, store, client = team
    pool = workers(settings)
    pool.start(2)
    response = client.post("/api/v1/studies", json=digits_study(max_trials=6, parallelism=2, name="pg-redis"))
    assert response.status_code == 201, response.json
    study = wait_for_study(store, response.json["id"], logs=pool.logs)
    assert study.status == "completed", study.error

    trials = store.list_trials(study.id, sort="number", limit=100).items
    assert [t.number for t in trials] == list(range(6))
    assert all(t.status == "completed" for t in trials)
    assert len({t.oracle_trial_id for t in trials}) == 6
    assert len({t.ticket for t in trials}) == 6
    assert {slot_of(t.worker) for t in trials} == {"w0", "w1"}, "both worker processes should have trained trials"
    intervals = sorted((t.started_at, t.finished_at) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(intervals, intervals[1:], strict=False)), "no two trials overlapped"

    # Random search saves no state (each trial number has its own stream of draws); every configuration is new.
    assert "random" not in (study.oracle_state or {})
    assert len({config_hash(t.hyperparameters) for t in trials}) == 6

    board = store.leaderboard(study_id=study.id).items
    assert [row["score"] for row in board] == sorted((t.score for t in trials), reverse=True)
    assert study.best_trial_id == board[0]["trial_id"]


def test_hyperband_study_completes_and_resumes_from_checkpoints(team, workers) -> None:
    settings, store, client = team
    pool = workers(settings)
    pool.start(2)
    doc = digits_study(
        name="hyperband",
        algorithm={"name": "hyperband", "max_epochs": 3, "factor": 3},
        parallelism=2,
        early_stopping={"patience": 5},
    )
    doc.pop("max_trials")
    response = client.post("/api/v1/studies", json=doc)
    assert response.status_code == 201, response.json
    assert response.json["progress"]["budget"] == 6  # brackets of 3+1 and 2 trials
    study = wait_for_study(store, response.json["id"], logs=pool.logs)
    assert study.status == "completed", study.error

    trials = store.list_trials(study.id, sort="number", limit=100).items
    assert len(trials) == 6
    assert all(t.status == "completed" for t in trials)
    resumed = [t for t in trials if "tuner/trial_id" in t.hyperparameters]
    assert resumed, "the second round of the first bracket continues its best trial"
    by_oracle_id = {t.oracle_trial_id: t for t in trials}
    for trial in resumed:
        parent = by_oracle_id[trial.hyperparameters["tuner/trial_id"]]
        assert trial.hyperparameters["tuner/initial_epoch"] == 1
        assert parent.hyperparameters["tuner/epochs"] == 1
        epochs = [e.epoch for e in store.epochs(trial.id)]
        assert epochs[0] == 1, "a resumed trial continues at its initial epoch instead of restarting"
        assert (trial.epochs_run, trial.epochs_trained) == (3, 2), "absolute epoch reached, epochs it trained"
        assert trial.best_epoch >= 1
