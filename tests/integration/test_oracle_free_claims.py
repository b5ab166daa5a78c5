"""Random search, ASHA and Hyperband claim from the trial rows (no Keras Tuner oracle), on SQLite and
PostgreSQL: ASHA's promotions come from one query over the rows, Hyperband reads the rows of its open
brackets, draws are checked against the rows' digests, and the study's stored state does not grow with its
trials. Two stores stand for two worker processes."""

from __future__ import annotations

import contextlib
import json
import random
import uuid

import pytest

from tests.conftest import digits_study
from tuner_service.proposals import config_key
from tuner_service.search import Claim, TrialOutcome, claim_next, finish_trial
from tuner_service.store import Store
from tuner_service.study import submit_study

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def two_stores(request, settings):
    url = settings.database_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    first, second = Store(url), Store(url)
    first.upgrade()
    yield first, second
    first.dispose()
    second.dispose()


def claim(store: Store) -> Claim:
    result = claim_next(store, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
    assert isinstance(result, Claim), result
    return result


def finish(store: Store, claimed: Claim, score: float) -> None:
    outcome = TrialOutcome("completed", {"val_accuracy": score}, best_epoch=0)
    finish_trial(store, claimed.study.id, claimed.trial.id, outcome)


def test_asha_promotes_from_the_rows_whichever_process_claims(two_stores, settings) -> None:
    a, b = two_stores
    asha = {"name": "asha", "min_epochs": 1, "max_epochs": 9, "reduction_factor": 3}
    submit_study(a, settings, digits_study(algorithm=asha, max_trials=30, parallelism=30), lambda pool, n: None)
    first = [claim(a), claim(b), claim(a)]
    assert [c.values["tuner/rung"] for c in first] == [0, 0, 0]
    for claimed, score in zip(first, (0.5, 0.9, 0.7), strict=True):
        finish(b, claimed, score)
    promoted = claim(a)  # the best of three finished at rung 0 (its top third)
    assert promoted.resumes == first[1].trial.oracle_trial_id
    assert (promoted.values["tuner/rung"], promoted.values["tuner/initial_epoch"], promoted.values["tuner/epochs"]) == (
        1, 1, 3,
    )  # fmt: skip
    assert config_key(promoted.values) == config_key(first[1].values)
    fourth = claim(b)
    assert fourth.values["tuner/rung"] == 0  # promoted once only
    finish(a, promoted, 0.95)  # alone at rung 1: 1 // 3 == 0 promotable there
    finish(a, fourth, 0.1)
    more = [claim(b), claim(b)]  # four finished at rung 0: only the best is in its top third, and it was promoted
    assert [c.values["tuner/rung"] for c in more] == [0, 0]
    for claimed in more:
        finish(a, claimed, 0.1)
    second = claim(a)  # six finished at rung 0: the second best (0.7) is in the top third now
    assert second.resumes == first[2].trial.oracle_trial_id and second.values["tuner/rung"] == 1


def reference_promotion(trials: list[dict], below_rung: int, eta: int) -> tuple[str, int] | None:
    """ASHA's rule, written plainly: the best trial of the highest rung below ``below_rung`` that is in the top 1/η
    of its rung's finished trials (ranked by score, then number) and that no trial resumes yet."""
    promoted = {t["resumes"] for t in trials if t["resumes"] is not None}
    for rung in reversed(range(below_rung)):
        finished = [t for t in trials if t["rung"] == rung and t["status"] in ("completed", "pruned")]
        finished = [t for t in finished if t["score"] is not None]
        finished.sort(key=lambda t: (-t["score"], t["number"]))
        for place, trial in enumerate(finished, start=1):
            if place * eta <= len(finished) and trial["oracle_id"] not in promoted:
                return trial["oracle_id"], rung
    return None


def test_asha_promotion_query_matches_the_rule_written_plainly(two_stores, settings) -> None:
    """Random trial sets (rungs, outcomes, tied scores, trials already promoted): the promotion the indexed query
    finds is the one the rule picks, for several η and numbers of rungs."""
    a, _ = two_stores
    asha = {"name": "asha", "min_epochs": 1, "max_epochs": 27, "reduction_factor": 3}
    doc = digits_study(algorithm=asha, max_trials=1000, parallelism=64)
    rng = random.Random(5)
    for round_ in range(6):
        study = submit_study(a, settings, {**doc, "name": f"rule-{round_}"}, lambda pool, n: None)
        trials: list[dict] = []
        with a.locked_study(study.id) as tx:
            for number in range(rng.randint(5, 60)):
                resumes = rng.choice(trials)["oracle_id"] if trials and rng.random() < 0.3 else None
                values = {"units": number, "tuner/rung": rng.choice((0, 0, 0, 1, 1, 2))}
                if resumes is not None:
                    values["tuner/trial_id"] = resumes
                record = tx.add_trial(
                    number=number, oracle_trial_id=f"t{number:03d}", ticket=uuid.uuid4().hex, hyperparameters=values,
                    oracle_trial_state=None, worker="w",
                )  # fmt: skip
                status = rng.choice(("completed", "completed", "pruned", "failed", "running"))
                score = round(rng.random(), 1) if status in ("completed", "pruned") and rng.random() < 0.9 else None
                if status != "running":
                    tx.finish_trial(record.id, status=status, score=score)
                trials.append(
                    {"oracle_id": f"t{number:03d}", "number": number, "rung": values["tuner/rung"], "status": status,
                     "score": score if status != "running" else None, "resumes": resumes}
                )  # fmt: skip
            for below_rung in (1, 2, 3):
                for eta in (2, 3, 4):
                    found = tx.asha_promotion(below_rung, eta)
                    expected = reference_promotion(trials, below_rung, eta)
                    assert (found and (found[0], found[2])) == expected, (round_, below_rung, eta, trials)


def test_random_draws_never_repeat_and_the_state_stays_the_same_size(two_stores, settings) -> None:
    a, b = two_stores
    doc = digits_study(max_trials=60, parallelism=60, name=f"r-{uuid.uuid4().hex[:6]}")
    study = submit_study(a, settings, doc, lambda pool, n: None)
    sizes = []
    seen = set()
    for index in range(40):
        claimed = claim(a if index % 2 else b)
        key = config_key(claimed.values)
        assert key not in seen
        seen.add(key)
        finish(b if index % 2 else a, claimed, 0.5)
        if index in (9, 39):
            sizes.append(len(json.dumps(a.get_study(study.id).oracle_state)))
    assert sizes[0] == sizes[1]


def test_a_draw_inserted_unchecked_that_a_trial_has_is_drawn_again_with_lookups(
    two_stores, settings, monkeypatch
) -> None:
    """A claim inserts its first random draw without looking it up (the insert checks it). In a space of six
    configurations most first draws are taken: each such claim is made again with lookups, and the study still
    gets six different configurations, then none."""
    a, _ = two_stores
    tiny = {
        "hidden_layers": {"type": "int", "min": 0, "max": 2},
        "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
    }
    doc = digits_study(search_space=tiny, max_trials=8, parallelism=8, name=f"tiny-{uuid.uuid4().hex[:6]}")
    study = submit_study(a, settings, doc, lambda pool, n: None)
    modes: list[bool] = []
    with_study_lock = Store.with_study_lock

    def recording(self, *args, **kwargs):  # noqa: ANN001, ANN202 - Store.with_study_lock's signature
        modes.append(kwargs.get("optimistic", False))
        return with_study_lock(self, *args, **kwargs)

    monkeypatch.setattr(Store, "with_study_lock", recording)
    configurations = []
    for _ in range(6):
        claimed = claim(a)
        configurations.append(config_key(claimed.values))
        finish(a, claimed, 0.5)
    assert len(set(configurations)) == 6
    assert False in modes  # at least one optimistic claim found its draw taken and was made again
    result = claim_next(a, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
    assert not isinstance(result, Claim), result  # the space is exhausted
    assert len(a.list_trials(study.id, limit=20).items) == 6


def test_hyperband_runs_its_brackets_from_the_rows_and_its_state_stays_bounded(two_stores, settings) -> None:
    a, b = two_stores
    algorithm = {"name": "hyperband", "max_epochs": 9, "factor": 3, "hyperband_iterations": 3}
    doc = digits_study(algorithm=algorithm, parallelism=4, name=f"hb-{uuid.uuid4().hex[:6]}")
    doc.pop("max_trials")
    study = submit_study(a, settings, doc, lambda pool, n: None)
    budget = study.max_trials  # Keras Tuner's Hyperband size for these settings
    sizes = []
    for index in range(budget):
        claimed = claim(b if index % 2 else a)
        values = claimed.values
        if values["tuner/round"] > 0:  # a promotion continues a finished trial of the previous round
            trials = a.list_trials(study.id, limit=500).items
            parent = next(t for t in trials if t.oracle_trial_id == values["tuner/trial_id"])
            assert parent.status == "completed" and parent.hyperparameters["tuner/round"] == values["tuner/round"] - 1
            assert values["tuner/initial_epoch"] == parent.hyperparameters["tuner/epochs"]
        finish(a if index % 2 else b, claimed, 0.3 + (index * 37 % 11) / 20)
        if index in (12, budget - 1):
            sizes.append(len(json.dumps(a.get_study(study.id).oracle_state["hyperband"])))
    assert a.get_study(study.id).status == "completed"
    assert sizes[1] <= sizes[0] * 2  # the open brackets only, not every trial so far


class RolledBack(Exception):
    """Raised inside a study's transaction to roll it back."""


def test_a_report_stores_its_result_once_and_knows_the_load_it_leaves(two_stores, settings) -> None:
    """A report is one statement (on PostgreSQL it also returns the study's load as found under the lock):
    the load it acts on is the one a fresh read gives after it, a report made twice changes nothing, and the
    last report completes the study."""
    a, b = two_stores
    doc = digits_study(algorithm={"name": "random"}, max_trials=3, parallelism=3)
    study = submit_study(a, settings, doc, lambda pool, n: None)
    claimed = [claim(a), claim(b), claim(a)]
    for index, c in enumerate(claimed):
        with contextlib.suppress(RolledBack), b.locked_study(study.id) as tx:
            outcome = tx.finish_running_trial(
                c.trial.id, status="completed", score=0.5 + index / 10, best_epoch=0,
                metrics={"val_accuracy": 0.5 + index / 10}, error=None, model_path=None, environment=None,
            )  # fmt: skip
            assert outcome is not None
            record, load = outcome
            assert record.status == "completed" and record.duration_s is not None and record.duration_s >= 0
            assert load in (None, tx.load())  # SQLite: None (the report reads the load itself)
            assert tx.load() == (3, 2, 0)  # the three trials, this one no longer running
            assert tx.finish_running_trial(
                c.trial.id, status="failed", score=None, best_epoch=None, metrics=None, error="again",
                model_path=None, environment=None,
            ) is None  # fmt: skip
            raise RolledBack  # keep the trials running: the reports below go through finish_trial
    for c in claimed[:2]:
        finish(b, c, 0.6)
    assert a.get_study(study.id).status == "running"
    finish(a, claimed[2], 0.9)
    done = a.get_study(study.id)
    assert done.status == "completed" and done.best_score == 0.9
    assert [t.status for t in a.list_trials(study.id, sort="number", limit=10).items] == ["completed"] * 3
