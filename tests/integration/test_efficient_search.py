"""ASHA and pruning with real worker processes on Redis + PostgreSQL."""

from __future__ import annotations

import pytest

from tests.conftest import digits_study, slot_of, wait_for_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_asha_with_two_workers_promotes_trials_that_resume_from_their_checkpoints(team, workers) -> None:
    settings, store, client = team
    pool = workers(settings)
    pool.start(2)
    doc = digits_study(
        name="asha",
        algorithm={"name": "asha", "min_epochs": 1, "max_epochs": 9, "reduction_factor": 3},
        max_trials=14,
        parallelism=2,
        early_stopping={"patience": 20},
    )
    response = client.post("/api/v1/studies", json=doc)
    assert response.status_code == 201, response.get_json()
    study = wait_for_study(store, response.get_json()["id"], logs=pool.logs)
    assert study.status == "completed", study.error
    trials = store.list_trials(study.id, sort="number", limit=100).items
    assert len(trials) == 14 and all(t.status == "completed" for t in trials), [(t.status, t.error) for t in trials]
    assert {slot_of(t.worker) for t in trials} == {"w0", "w1"}
    by_oracle_id = {t.oracle_trial_id: t for t in trials}
    promoted = [t for t in trials if t.hyperparameters["tuner/rung"] > 0]
    assert promoted, "no trial was promoted"
    for trial in promoted:
        parent = by_oracle_id[trial.hyperparameters["tuner/trial_id"]]
        assert parent.hyperparameters["tuner/rung"] == trial.hyperparameters["tuner/rung"] - 1
        start = trial.hyperparameters["tuner/initial_epoch"]
        assert start == parent.hyperparameters["tuner/epochs"]
        epochs = [e.epoch for e in store.epochs(trial.id)]
        assert epochs[0] == start, "a promoted trial continues at its parent's last epoch instead of restarting"
        # Resuming from the parent's weights, the first new epoch is already near the parent's level.
        first = store.epochs(trial.id)[0].metrics["val_accuracy"]
        assert first >= parent.score - 0.15


def test_a_median_pruner_stops_bad_learning_rates_early(team, workers) -> None:
    settings, store, client = team
    pool = workers(settings)
    pool.start(1)
    space = {
        "hidden_layers": {"type": "fixed", "value": 1},
        "neurons": {"type": "fixed", "value": 32},
        "optimizer": {"type": "fixed", "value": "adam"},
        "learning_rate": {"type": "choice", "values": [0.01, 0.000001]},
        "trial_seed": {"type": "choice", "values": [0, 1, 2, 3]},
    }
    doc = digits_study(
        name="median",
        search_space=space,
        algorithm="grid",
        max_trials=8,
        pruner={"name": "median", "warmup_epochs": 1, "min_trials": 2},
        early_stopping={"patience": 50, "max_epochs": 8},
    )
    response = client.post("/api/v1/studies", json=doc)
    assert response.status_code == 201, response.get_json()
    study = wait_for_study(store, response.get_json()["id"], logs=pool.logs)
    assert study.status == "completed", study.error
    trials = store.list_trials(study.id, sort="number", limit=100).items
    bad = [t for t in trials if t.hyperparameters["learning_rate"] == 0.000001]
    good = [t for t in trials if t.hyperparameters["learning_rate"] == 0.01]
    # The grid runs the good rate first, so every bad trial meets enough peers to be judged at epoch 2.
    assert all(t.status == "pruned" and t.epochs_run == 2 and "median" in t.error for t in bad), [
        (t.status, t.epochs_run) for t in bad
    ]
    # Median pruning may also stop a good trial that trails the median, but never before its peers' level.
    assert all(t.epochs_run >= 2 and t.score > 0.9 for t in good)
    assert sum(t.epochs_trained for t in trials) < 8 * 8 * 0.7, "pruning should save at least 30% of the epochs"
    board = store.leaderboard(study_id=study.id, limit=50).items
    assert {row["status"] for row in board} == {"completed", "pruned"}
    assert board[0]["status"] == "completed" and board[0]["hyperparameters"]["learning_rate"] == 0.01


def wait_job(client, url: str, pool, timeout_s: float = 180.0) -> dict:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(url).get_json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job at {url} did not finish\n{pool.logs()}")


def test_range_test_finds_a_known_good_rate_and_a_study_centres_on_it(team, workers) -> None:
    """Linear regression on standardized, independent features with MSE and plain SGD: the loss's curvature
    is 2 in every direction, so the best rate is about 1/2 and SGD diverges from about 1. The target stays
    unscaled: standardizing it would divide that curvature by the target's variance."""
    settings, store, client = team
    pool = workers(settings)
    pool.start(1)
    spec = {
        "dataset": "synthetic_regression",
        "task": {"type": "regression", "loss": "mse", "scale_target": False},
        "architecture": {"hidden_layers": 0, "optimizer": "sgd", "batch_size": 32},
        "min_lr": 1e-5,
        "max_lr": 10,
        "steps": 500,
    }
    response = client.post("/api/v1/lr-range-tests", json=spec)
    assert response.status_code == 202, response.get_json()
    job = wait_job(client, response.headers["Location"], pool)
    assert job["status"] == "completed", job["error"]
    suggestion = job["result"]["suggestion"]
    known_good = 0.5
    assert known_good / 10 <= suggestion["suggested_lr"] <= known_good * 10, suggestion
    assert 0.3 <= suggestion["diverged_lr"] <= 3.0, suggestion
    curve = job["result"]["curve"]
    assert curve[0]["lr"] == pytest.approx(1e-5) and all(
        a["lr"] < b["lr"] for a, b in zip(curve, curve[1:], strict=False)
    )

    doc = digits_study(
        name="centred",
        dataset="synthetic_regression",
        task={"type": "regression", "scale_target": False},
        objective="val_loss",
        max_trials=2,
        learning_rate_from={"lr_range_test": job["id"], "factor": 10},
    )
    study = client.post("/api/v1/studies", json=doc)
    assert study.status_code == 201, study.get_json()
    space = study.get_json()["spec"]["search_space"]["learning_rate"]
    assert space["min"] == pytest.approx(suggestion["suggested_lr"] / 10)
    finished = wait_for_study(store, study.get_json()["id"], logs=pool.logs)
    trials = store.list_trials(finished.id, limit=10).items
    assert all(space["min"] <= t.hyperparameters["learning_rate"] <= space["max"] for t in trials)


def test_a_rerun_reproduces_a_trial_and_reports_the_spread(team, workers) -> None:
    settings, store, client = team
    pool = workers(settings)
    pool.start(1)
    response = client.post("/api/v1/studies", json=digits_study(name="rerun", max_trials=1, seed=5))
    study = wait_for_study(store, response.get_json()["id"], logs=pool.logs)
    trial = store.list_trials(study.id).items[0]
    env = trial.environment
    assert env["seed"] >= 0 and env["backend"] == "tensorflow" and env["keras"] and env["keras_tuner"]
    rerun = client.post(f"/api/v1/studies/{study.id}/trials/{trial.number}/rerun", json={"repeats": 2})
    assert rerun.status_code == 202
    job = wait_job(client, rerun.headers["Location"], pool)
    assert job["status"] == "completed", job["error"]
    result = job["result"]
    assert result["same_seed"]["seed"] == env["seed"]
    assert result["same_seed"]["score"] == pytest.approx(trial.score, abs=0.02)
    assert len(result["other_seeds"]) == 2 and result["spread"]["min"] <= result["spread"]["max"]
    assert 0.0 <= result["spread"]["std"] < 0.2
