"""The service's Hyperband against Keras Tuner's ``HyperbandOracle``: fed the same configurations and the
same results in the same order, both start the same trials, promote the same parents with the same budgets,
wait and stop at the same moments; also after being rebuilt from its stored state, and from the state of a
Keras Tuner oracle (a study stored before continues)."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from tuner_service.hyperband import STOPPED, WAIT, Hyperband, Result

kt = pytest.importorskip("keras_tuner")


def keras_tuner_oracle(max_epochs: int, factor: int, iterations: int):
    class InMemory(kt.oracles.HyperbandOracle):
        def save(self) -> None:
            pass

        def _save_trial(self, trial) -> None:
            pass

    hp = kt.HyperParameters()
    hp.Int("x", 0, 10**6)
    oracle = InMemory(
        objective=kt.Objective("score", direction="max"),
        max_epochs=max_epochs,
        factor=factor,
        hyperband_iterations=iterations,
        hyperparameters=hp,
        max_consecutive_failed_trials=1000,
    )
    oracle.verbose = 0
    return oracle


@pytest.mark.parametrize(("max_epochs", "factor", "iterations", "seed"), [(9, 3, 2, 0), (27, 3, 1, 1), (8, 2, 2, 2)])
def test_the_same_decisions_as_keras_tuners_oracle(max_epochs, factor, iterations, seed) -> None:
    rng = random.Random(seed)
    oracle = keras_tuner_oracle(max_epochs, factor, iterations)
    options = {"max_epochs": max_epochs, "factor": factor, "hyperband_iterations": iterations}
    ours = Hyperband.of(options, None)
    fresh = itertools.count()
    theirs_draws, our_draws = [], []

    def their_draw():
        theirs_draws.append(next(fresh))
        return {"x": theirs_draws[-1]}

    oracle._random_values = their_draw
    results: dict[str, Result] = {}
    running: list[str] = []
    tuners = itertools.count()
    stopped = False
    steps = 0
    while not stopped and steps < 2000:
        steps += 1
        if steps == 40:  # continue from a Keras Tuner oracle's stored state
            ours = Hyperband.of(options, json.loads(json.dumps(oracle.get_state())))
        elif steps % 7 == 0:  # every claim rebuilds it from the study's stored state
            ours = Hyperband.of(options, json.loads(json.dumps({"hyperband": ours.to_json()})))
        if running and (len(running) >= 5 or rng.random() < 0.5):  # finish one of the running trials
            trial_id = running.pop(rng.randrange(len(running)))
            trial = oracle.trials[trial_id]
            failed = rng.random() < 0.1
            score = round(rng.random(), 2)  # ties happen: both must break them alike
            if not failed:
                oracle.update_trial(trial_id, {"score": score})
            trial.status = "FAILED" if failed else "COMPLETED"
            oracle.end_trial(trial)
            results[trial_id] = Result(not failed, None if failed else -score, dict(trial.hyperparameters.values))
            continue
        trial = oracle.create_trial(f"tuner-{next(tuners)}")
        expected_id = f"{len(oracle.trials):0{len(str(None))}d}"  # the id Keras Tuner gives a new trial
        mine = ours.next(
            trial.trial_id if trial.status == "RUNNING" else expected_id,
            # All the results, or a read of those asked for (as a claim passes them): a decision that needed a
            # trial it did not ask for would differ from the oracle's.
            results if steps % 2 else lambda ids: {i: results[i] for i in ids if i in results},
            lambda: (our_draws.append(len(our_draws)), {"x": our_draws[-1]})[1],
            len(running),
        )
        if trial.status == "RUNNING":
            assert mine == trial.hyperparameters.values, f"step {steps}"
            running.append(trial.trial_id)
            results[trial.trial_id] = Result(False, None, dict(mine))
        elif trial.status == "IDLE":
            assert mine == WAIT, f"step {steps}"
            if not running:
                break
        else:
            assert trial.status == "STOPPED" and mine == STOPPED, f"step {steps}"
            stopped = True
    assert stopped and our_draws == theirs_draws
