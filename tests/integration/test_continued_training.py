"""Promotions that continue their parent's training, and scaled regression targets, through a real worker on
Redis + PostgreSQL: both studies run on one worker at once, to pay for its start only once."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from tests.conftest import digits_study, wait_for_study
from tuner_service.datasets import describe_builtin, load_split
from tuner_service.training import checkpoint_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_promotion_continues_its_parent_and_a_scaled_target_is_saved_in_its_units(team, workers, tmp_path) -> None:
    settings, store, client = team
    pool = workers(settings)
    pool.start(1)
    asha = digits_study(
        name="asha-continues",
        search_space={
            "hidden_layers": {"type": "fixed", "value": 1},
            "neurons": {"type": "int", "min": 16, "max": 64},
            "learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2, "sampling": "log"},
            "optimizer": {"type": "fixed", "value": "adam"},
            "batch_size": {"type": "fixed", "value": 64},
        },
        algorithm={"name": "asha", "min_epochs": 1, "max_epochs": 3, "reduction_factor": 3},
        max_trials=4,
        early_stopping={"patience": 10, "max_epochs": 3},
    )
    regression = digits_study(
        name="diabetes-scaled",
        dataset="builtin:diabetes",
        task={"type": "regression", "metrics": ["mae"]},
        objective="val_mae",
        search_space={"learning_rate": {"type": "fixed", "value": 0.01}},
        max_trials=1,
        early_stopping={"patience": 10, "max_epochs": 3},
    )
    ids = []
    for doc in (asha, regression):
        response = client.post("/api/v1/studies", json=doc)
        assert response.status_code == 201, response.get_json()
        ids.append(response.get_json()["id"])
    asha_study, regression_study = (wait_for_study(store, i, logs=pool.logs) for i in ids)
    assert asha_study.status == regression_study.status == "completed", (asha_study.error, regression_study.error)

    # ASHA: three configurations train one epoch each, the best continues to epoch 3.
    trials = store.list_trials(asha_study.id, sort="number", limit=10).items
    assert len(trials) == 4 and all(t.status == "completed" for t in trials)
    child = trials[3]
    parent = next(t for t in trials if t.oracle_trial_id == child.hyperparameters["tuner/trial_id"])
    assert child.hyperparameters["tuner/rung"] == 1
    assert (parent.epochs_run, parent.epochs_trained) == (1, 1)
    assert (child.epochs_run, child.epochs_trained) == (3, 2), "epochs_run is absolute, epochs_trained its own"
    assert sum(t.epochs_trained for t in trials) == 5 == sum(len(store.epochs(t.id)) for t in trials)
    detail = client.get(f"/api/v1/studies/{asha_study.id}/trials/{child.number}").get_json()
    assert (detail["epochs_run"], detail["epochs_trained"]) == (3, 2)

    parent_epochs, child_epochs = store.epochs(parent.id), store.epochs(child.id)
    assert [e.epoch for e in child_epochs] == [1, 2]
    # The curve goes on from the parent's last epoch: a restart would train its first epoch again at about
    # the parent's first-epoch loss; validation stays at the parent's level instead of falling back.
    parent_last, child_first = parent_epochs[-1].metrics, child_epochs[0].metrics
    assert child_first["loss"] < 0.8 * parent_last["loss"], (parent_last, child_first)
    assert child_first["val_loss"] < 1.1 * parent_last["val_loss"], (parent_last, child_first)
    assert "continues trial" in pool.logs() and "from memory" in pool.logs()

    # The optimizer's step counter went on through the promotion: one epoch in the parent, two in the child.
    split = load_split(describe_builtin("digits"), settings.artifacts, task_type="multiclass")
    steps = math.ceil(len(split.x_train) / 64)
    parent_ckpt = keras.models.load_model(checkpoint_path(settings, asha_study.id, parent.oracle_trial_id))
    child_ckpt = keras.models.load_model(checkpoint_path(settings, asha_study.id, child.oracle_trial_id))
    assert int(parent_ckpt.optimizer.iterations) == steps
    assert int(child_ckpt.optimizer.iterations) == 3 * steps

    # Scaled regression: the downloaded model predicts diabetes' own units, and the stored metrics are in them.
    (trial,) = store.list_trials(regression_study.id, limit=10).items
    response = client.get(f"/api/v1/studies/{regression_study.id}/trials/{trial.number}/model")
    assert response.status_code == 200
    path = tmp_path / "downloaded.keras"
    path.write_bytes(response.data)
    data = load_split(describe_builtin("diabetes"), settings.artifacts, task_type="regression")
    predictions = keras.models.load_model(path).predict(data.x_val, verbose=0)
    assert 100 < predictions.mean() < 200 and predictions.std() > 10, "diabetes targets lie around 150 ± 77"
    errors = predictions - data.y_val
    assert trial.metrics["val_mae"] == pytest.approx(float(np.abs(errors).mean()), rel=1e-3)
    assert trial.metrics["val_loss"] == pytest.approx(float((errors**2).mean()), rel=1e-3)
    assert trial.score == trial.metrics["val_mae"] < 100
