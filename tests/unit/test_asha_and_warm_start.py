"""ASHA's promotion rules and warm starts, through the real database-backed Keras Tuner oracles with
scripted scores (no training)."""

from __future__ import annotations

import itertools
import uuid

import pytest

from tests.conftest import digits_study
from tuner_service.asha import rung_epochs
from tuner_service.search import Claim, TrialOutcome, claim_next, finish_trial
from tuner_service.study import submit_study

pytest.importorskip("keras_tuner")


def submit(store, settings, **overrides):
    return submit_study(store, settings, digits_study(**overrides), lambda pool, n: None)


def claim(store) -> Claim:
    result = claim_next(store, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
    assert isinstance(result, Claim), result
    return result


def finish(store, claimed: Claim, score: float) -> None:
    outcome = TrialOutcome("completed", {"val_accuracy": score}, best_epoch=claimed.values["tuner/epochs"] - 1)
    finish_trial(store, claimed.study.id, claimed.trial.id, outcome)


def test_rungs() -> None:
    assert rung_epochs(1, 9, 3) == [1, 3, 9]
    assert rung_epochs(1, 10, 3) == [1, 3, 9, 10]
    assert rung_epochs(2, 20, 2) == [2, 4, 8, 16, 20]


def test_a_trial_in_the_top_third_is_promoted_without_waiting_for_the_rung_to_fill(store, settings) -> None:
    asha = {"name": "asha", "min_epochs": 1, "max_epochs": 9, "reduction_factor": 3}
    submit(store, settings, algorithm=asha, max_trials=30, parallelism=30)
    first = [claim(store) for _ in range(3)]
    assert all(c.values["tuner/rung"] == 0 and c.values["tuner/epochs"] == 1 for c in first)
    finish(store, first[0], 0.50)
    finish(store, first[1], 0.90)
    # Two results at rung 0: 2 // 3 == 0 may be promoted, so a new configuration starts.
    assert claim(store).values["tuner/rung"] == 0
    finish(store, first[2], 0.70)
    # Three results: the best (0.90) is in the top third and is promoted at once, resuming its checkpoint.
    promoted = claim(store)
    assert promoted.values["tuner/rung"] == 1
    assert promoted.resumes == first[1].trial.oracle_trial_id
    assert (promoted.values["tuner/initial_epoch"], promoted.values["tuner/epochs"]) == (1, 3)
    plain = {k: v for k, v in promoted.values.items() if not k.startswith("tuner/")}
    assert plain == {k: v for k, v in first[1].values.items() if not k.startswith("tuner/")}
    # It is promoted once only; the next request gets a fresh configuration.
    assert claim(store).values["tuner/rung"] == 0


def test_promotion_prefers_the_highest_rung_and_reaches_max_epochs(store, settings) -> None:
    asha = {"name": "asha", "min_epochs": 1, "max_epochs": 9, "reduction_factor": 3}
    submit(store, settings, algorithm=asha, max_trials=40, parallelism=40)
    scores = itertools.count(1)
    top_rung_seen = False
    for _ in range(30):
        claimed = claim(store)
        rung = claimed.values["tuner/rung"]
        # Later configurations score better, so each rung always has fresh top-third trials to promote.
        finish(store, claimed, next(scores) / 100 + rung)
        top_rung_seen = top_rung_seen or claimed.values["tuner/epochs"] == 9
    assert top_rung_seen, "some trial should have been promoted all the way to max_epochs"


def test_a_random_search_seeded_with_earlier_trials_does_not_repeat_them(store, settings) -> None:
    space = {
        "optimizer": {"type": "choice", "values": ["sgd", "adam", "rmsprop"]},
        "batch_size": {"type": "choice", "values": [32, 64]},
    }
    earlier = submit(store, settings, search_space=space, max_trials=4, seed=1)
    seen = set()
    for score in (0.1, 0.2, 0.3, 0.4):
        c = claim(store)
        seen.add((c.values["optimizer"], c.values["batch_size"]))
        finish_trial(store, earlier.id, c.trial.id, TrialOutcome("completed", {"val_accuracy": score}, 0))
    later = submit(store, settings, search_space=space, max_trials=2, seed=1, warm_start={"studies": [earlier.id]})
    fresh = set()
    for _ in range(2):
        c = claim(store)
        assert c.study.id == later.id
        fresh.add((c.values["optimizer"], c.values["batch_size"]))
        finish_trial(store, later.id, c.trial.id, TrialOutcome("completed", {"val_accuracy": 0.5}, 0))
    assert len(fresh) == 2 and not fresh & seen, "a seeded random search repeated a seeded point"
    assert fresh | seen == set(itertools.product(["sgd", "adam", "rmsprop"], [32, 64]))
    assert store.get_study(later.id).status == "completed"  # seeds do not use up the budget


def test_a_seeded_bayesian_study_proposes_differently_from_an_unseeded_one(store, settings) -> None:
    space = {"learning_rate": {"type": "float", "min": 1e-4, "max": 1e-1, "sampling": "log"}}
    earlier = submit(store, settings, search_space=space, max_trials=6, seed=3)
    for _ in range(6):
        c = claim(store)
        lr = c.values["learning_rate"]
        # A sharp optimum near 1e-2: the seeded oracle should head there.
        finish_trial(store, earlier.id, c.trial.id, TrialOutcome("completed", {"val_accuracy": 1 - abs(lr - 1e-2)}, 0))
    bayes = {"name": "bayesian", "num_initial_points": 2}
    proposals = {}
    for label, warm in (("unseeded", None), ("seeded", {"studies": [earlier.id]})):
        extra = {"warm_start": warm} if warm else {}
        study = submit(store, settings, search_space=space, max_trials=2, seed=11, algorithm=bayes, **extra)
        c = claim(store)
        assert c.study.id == study.id
        proposals[label] = c.values["learning_rate"]
        store.cancel_study(study.id)
    assert proposals["seeded"] != proposals["unseeded"]


def test_warm_start_from_another_data_set_is_refused(store, settings) -> None:
    from tuner_service.errors import InvalidInput

    other = submit(store, settings, dataset="builtin:wine")
    with pytest.raises(InvalidInput) as caught:
        submit(store, settings, warm_start={"studies": [other.id, 999]})
    assert [e.field for e in caught.value.errors] == ["warm_start.studies[0]", "warm_start.studies[1]"]
