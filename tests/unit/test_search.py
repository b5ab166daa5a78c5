"""The search driver on a real SQLite store and real Keras Tuner oracles; outcomes are given, not trained."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.conftest import digits_study
from tuner_service.reaper import reap
from tuner_service.search import Claim, Done, TrialOutcome, Wait, claim_next, finish_trial
from tuner_service.study import submit_study

pytest.importorskip("keras_tuner")


def submit(store, settings, **overrides):
    sent: list[tuple[int, int]] = []
    study = submit_study(store, settings, digits_study(**overrides), lambda s, n: sent.append((s, n)))
    return study, sent


def claim(store, study_id, ticket=None, worker="w", timeout=60.0):
    """A claim on the cpu pool; these tests have one study at a time, so the queue serves ``study_id``."""
    result = claim_next(store, "cpu", ticket=ticket or uuid.uuid4().hex, worker=worker, heartbeat_timeout_s=timeout)
    if isinstance(result, Claim):
        assert result.study.id == study_id
    return result


def done(score: float) -> TrialOutcome:
    return TrialOutcome("completed", metrics={"val_accuracy": score, "loss": 1 - score}, best_epoch=0)


def test_claims_follow_the_budget_and_complete_the_study(store, settings) -> None:
    study, sent = submit(store, settings, max_trials=3, parallelism=2)
    assert sent == [("cpu", 2)]
    scores = [0.5, 0.9, 0.7]
    for number, score in enumerate(scores):
        claimed = claim(store, study.id)
        assert isinstance(claimed, Claim) and claimed.trial.number == number
        finished = finish_trial(store, study.id, claimed.trial.id, done(score))
        assert finished.trial.score == pytest.approx(score)
    assert finished.study_status == "completed" and not finished.more_work
    assert isinstance(claim(store, study.id), Done)
    final = store.get_study(study.id)
    assert final.best_score == pytest.approx(0.9)
    assert [row["score"] for row in store.leaderboard(study_id=study.id).items] == pytest.approx([0.9, 0.7, 0.5])


def test_a_redelivered_message_never_creates_a_second_trial(store, settings) -> None:
    study, _ = submit(store, settings, max_trials=3)
    first = claim(store, study.id, ticket="t1")
    assert isinstance(first, Claim)
    again = claim(store, study.id, ticket="t1")  # broker redelivers while the first worker is alive
    assert isinstance(again, Done)
    finish_trial(store, study.id, first.trial.id, done(0.8))
    assert isinstance(claim(store, study.id, ticket="t1"), Done)  # and after it finished
    assert store.trial_counts(study.id) == {"completed": 1}
    # Reporting the same result twice changes nothing.
    twice = finish_trial(store, study.id, first.trial.id, done(0.1))
    assert twice.trial.score == pytest.approx(0.8) and not twice.more_work


def test_an_abandoned_trial_is_taken_over_by_its_redelivered_message(store, settings) -> None:
    study, _ = submit(store, settings, max_trials=2)
    first = claim(store, study.id, ticket="t1", worker="dead", timeout=60)
    assert isinstance(first, Claim)
    taken = claim(store, study.id, ticket="t1", worker="alive", timeout=0.0)  # heartbeat counts as stale
    assert isinstance(taken, Claim)
    assert taken.trial.id == first.trial.id and taken.trial.worker == "alive"
    assert taken.values == first.values


def test_reaper_requeues_a_silent_trial_then_fails_it_after_the_retry_limit(store, settings) -> None:
    settings = settings.with_overrides(heartbeat_timeout_s=0.0, max_trial_retries=1)
    study, _ = submit(store, settings, max_trials=2)
    woken: list[tuple[int, int]] = []
    jobs: list[int] = []
    first = claim(store, study.id, worker="dead")
    report = reap(store, settings, lambda s, n: woken.append((s, n)), lambda p, j: jobs.append(j))
    assert report.requeued == 1 and woken[0] == ("cpu", 1)
    again = claim(store, study.id, worker="second")
    assert isinstance(again, Claim) and again.trial.id == first.trial.id
    assert again.values == first.values and again.trial.retries == 1
    report = reap(store, settings, lambda s, n: woken.append((s, n)), lambda p, j: jobs.append(j))
    assert report.failed == 1
    trial = store.get_trial(study.id, first.trial.id)
    assert trial.status == "failed" and "gave up after 1 retries" in trial.error


def test_reaper_wakes_a_study_whose_messages_were_lost(store, settings) -> None:
    study, _ = submit(store, settings, max_trials=5, parallelism=3)
    woken: list[tuple[int, int]] = []
    jobs: list[int] = []
    reap(store, settings, lambda s, n: woken.append((s, n)), lambda p, j: jobs.append(j))
    assert woken == [], "just enqueued: not idle yet"
    time.sleep(0.05)
    reap(
        store,
        settings.with_overrides(wake_after_s=0.01),
        lambda s, n: woken.append((s, n)),
        lambda p, j: jobs.append(j),
    )
    assert woken == [("cpu", 3)]
    claim(store, study.id)  # one trial runs, the two other messages are lost: wake two
    time.sleep(0.05)
    quick = settings.with_overrides(wake_after_s=0.01)
    reap(store, quick, lambda s, n: woken.append((s, n)), lambda p, j: jobs.append(j))
    assert woken == [("cpu", 3), ("cpu", 2)]
    time.sleep(0.05)  # two messages already wait on the broker: nothing more to wake
    reap(store, quick, lambda s, n: woken.append((s, n)), lambda p, j: jobs.append(j), lambda pool: 2)
    assert woken == [("cpu", 3), ("cpu", 2)]
    reap(store, quick, lambda s, n: woken.append((s, n)), lambda p, j: jobs.append(j), lambda pool: 1)
    assert woken == [("cpu", 3), ("cpu", 2), ("cpu", 1)], "one of two still missing"
    claim(store, study.id)
    claim(store, study.id)  # at its parallelism now: nothing to wake
    time.sleep(0.05)
    reap(store, quick, lambda s, n: woken.append((s, n)), lambda p, j: jobs.append(j))
    assert woken == [("cpu", 3), ("cpu", 2), ("cpu", 1)]


def test_cancel_stops_new_claims_and_running_trials(store, settings) -> None:
    study, _ = submit(store, settings, max_trials=5)
    running = claim(store, study.id)
    assert isinstance(running, Claim)
    store.cancel_study(study.id)
    control = store.record_epoch(running.trial.id, 0, 0, {"val_accuracy": 0.5})
    assert control.stop and control.reason == "study cancelled"
    assert isinstance(claim(store, study.id), Done)
    finished = finish_trial(store, study.id, running.trial.id, TrialOutcome("cancelled", error="study cancelled"))
    assert finished.trial.status == "cancelled" and not finished.more_work


def test_failed_trials_are_recorded_and_three_in_a_row_fail_the_study(store, settings) -> None:
    study, _ = submit(store, settings, max_trials=5)
    for _ in range(3):
        claimed = claim(store, study.id)
        finish_trial(store, study.id, claimed.trial.id, TrialOutcome("failed", error="boom"))
    final = store.get_study(study.id)
    assert final.status == "failed" and "consecutive failures" in final.error
    assert store.trial_counts(study.id) == {"failed": 3}


def test_a_diverged_trial_with_nan_score_is_stored_as_failed(store, settings) -> None:
    study, _ = submit(store, settings, max_trials=2)
    claimed = claim(store, study.id)
    outcome = TrialOutcome("completed", metrics={"val_accuracy": float("nan"), "loss": float("nan")}, best_epoch=0)
    finished = finish_trial(store, study.id, claimed.trial.id, outcome)
    assert finished.trial.status == "failed" and finished.trial.score is None
    assert finished.trial.metrics == {"val_accuracy": None, "loss": None}


def test_hyperband_waits_for_its_round_instead_of_spinning(store, settings) -> None:
    doc = {"algorithm": {"name": "hyperband", "max_epochs": 3, "factor": 3}, "early_stopping": {"patience": 1}}
    study, _ = submit(store, settings, parallelism=10, **doc)
    claims = [claim(store, study.id) for _ in range(3)]  # bracket 1, round 0: three random trials
    assert all(isinstance(c, Claim) for c in claims)
    # Round 1 needs round 0's results; bracket 0 starts meanwhile with its 2 trials; then the oracle waits.
    extra = [claim(store, study.id) for _ in range(3)]
    assert [type(c).__name__ for c in extra] == ["Claim", "Claim", "Wait"]
    assert isinstance(extra[2], Wait) and extra[2].seconds > 0 and extra[2].study_ids == (study.id,)
    for c, score in zip(claims, [0.2, 0.9, 0.5], strict=True):
        finish_trial(store, study.id, c.trial.id, done(score))
    promoted = claim(store, study.id)
    assert isinstance(promoted, Claim)
    best = claims[1].trial.oracle_trial_id
    assert promoted.resumes == best and promoted.values["tuner/initial_epoch"] == 1


def test_bayesian_oracle_state_survives_the_database_round_trip(store, settings) -> None:
    study, _ = submit(store, settings, max_trials=6, algorithm={"name": "bayesian", "num_initial_points": 2})
    seen = []
    for score in [0.3, 0.6, 0.4, 0.8, 0.5, 0.7]:
        claimed = claim(store, study.id)
        assert isinstance(claimed, Claim)
        seen.append(tuple(sorted(claimed.values.items())))
        finish_trial(store, study.id, claimed.trial.id, done(score))
    assert len(set(seen)) == 6
    assert store.get_study(study.id).status == "completed"


def test_grid_search_walks_the_whole_grid_across_restores(store, settings) -> None:
    space = {
        "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
        "batch_size": {"type": "choice", "values": [16, 32, 64]},
    }
    study, _ = submit(store, settings, search_space=space, algorithm="grid", max_trials=10)
    seen = []
    while isinstance(claimed := claim(store, study.id), Claim):
        seen.append((claimed.values["optimizer"], claimed.values["batch_size"]))
        finish_trial(store, study.id, claimed.trial.id, done(0.5))
    assert sorted(seen) == sorted((o, b) for o in ("sgd", "adam") for b in (16, 32, 64))
    assert store.get_study(study.id).status == "completed"


def test_random_search_never_repeats_a_configuration_and_its_state_stays_small(store, settings) -> None:
    """Random search keeps no oracle: draws are checked against the trials' stored digests, the space's six
    configurations are each drawn once, and then the study completes as exhausted (the only state it stores)."""
    space = {
        "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
        "batch_size": {"type": "choice", "values": [16, 32, 64]},
    }
    study, _ = submit(store, settings, search_space=space, max_trials=10, parallelism=10)
    running = [claim(store, study.id) for _ in range(4)]  # running trials count as taken too
    seen = [(c.values["optimizer"], c.values["batch_size"]) for c in running]
    for c in running:
        finish_trial(store, study.id, c.trial.id, done(0.5))
    while isinstance(claimed := claim(store, study.id), Claim):
        seen.append((claimed.values["optimizer"], claimed.values["batch_size"]))
        finish_trial(store, study.id, claimed.trial.id, done(0.5))
    assert sorted(seen) == sorted((o, b) for o in ("sgd", "adam") for b in (16, 32, 64))
    final = store.get_study(study.id)
    assert final.status == "completed"
    assert final.oracle_state == {"random": {"avoid": [], "exhausted": True}}
    assert all(t.oracle_trial_state is None for t in store.list_trials(study.id, limit=100).items)


def test_a_seeded_random_study_draws_the_same_configurations_again(store, settings) -> None:
    def values_of(seed: int) -> list[dict]:
        study, _ = submit(store, settings, max_trials=5, seed=seed, name=f"seeded-{seed}-{uuid.uuid4().hex[:6]}")
        drawn = []
        while isinstance(claimed := claim(store, study.id), Claim):
            drawn.append(claimed.values)
            finish_trial(store, study.id, claimed.trial.id, done(0.5))
        return drawn

    first = values_of(7)
    assert len(first) == 5 and len({json.dumps(v, sort_keys=True) for v in first}) == 5
    assert values_of(7) == first
    assert values_of(8) != first


def test_a_restored_oracle_has_the_stored_space_and_leaves_the_stored_state_as_it_was(store, settings) -> None:
    """Restoring parses the stored space once per process and never rewrites the row's own state (Keras Tuner's
    parsing turns the conditions inside the dict it is given into objects, which could no longer be stored)."""
    import copy

    from tuner_service.search import restore_oracle

    space = {
        "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
        "momentum": {"type": "float", "min": 0.0, "max": 0.9, "condition": {"parent": "optimizer", "values": ["sgd"]}},
        "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
    }
    # Grid search is the one algorithm that still keeps a Keras Tuner oracle.
    study, _ = submit(store, settings, search_space=space, algorithm="grid", max_trials=4)
    for score in (0.4, 0.6):
        claimed = claim(store, study.id)
        finish_trial(store, study.id, claimed.trial.id, done(score))
    stored = store.get_study(study.id).oracle_state
    before = copy.deepcopy(stored)

    def restored_twice(tx):
        first, second = restore_oracle(tx), restore_oracle(tx)
        return first.hyperparameters, second.hyperparameters, tx.study.oracle_state

    first, second, after = store.with_study_lock(study.id, restored_twice)
    assert first.get_config() == second.get_config()
    assert json.dumps(first.get_config(), sort_keys=True) == json.dumps(before["hyperparameters"], sort_keys=True)
    assert first is not second and first.values is not second.values  # entries shared, values each their own
    first.values["learning_rate"] = 0.005
    assert second.values.get("learning_rate") != 0.005
    assert after == before  # the row's state untouched, still plain JSON
    json.dumps(after)
    momentum = next(hp for hp in first.space if hp.name == "momentum")
    assert [c.get_config() for c in momentum.conditions] == [{"name": "optimizer", "values": ["sgd"]}]
