"""Model-based proposals: clamping, the budget-aware initial design, RNG continuity, parallel claims without
repeats and the TPE rebuild, on a real SQLite store (outcomes are given, not trained)."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid

import pytest

from tests.conftest import digits_study
from tuner_service import proposals
from tuner_service.errors import InvalidInput
from tuner_service.search import Claim, Propose, TrialOutcome, claim_next, claim_once, finish_trial
from tuner_service.space import SearchSpace
from tuner_service.study import StudySpec, submit_study

pytest.importorskip("optuna")

CONDITIONAL_SPACE = {
    "hidden_layers": {"type": "int", "min": 0, "max": 2},
    "neurons": {"type": "int", "min": 16, "max": 256, "sampling": "log", "per_layer": True},
    "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-1, "sampling": "log"},
    "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
    "momentum": {"type": "float", "min": 0.0, "max": 0.9, "condition": {"parent": "optimizer", "values": ["sgd"]}},
}


def params(space: dict) -> list:
    return proposals.tuned(SearchSpace.from_json(space))


def one(spec: dict) -> object:
    return params({"x": spec})[0]


# -- clamping -----------------------------------------------------------------------------------------


def test_a_log_sampled_int_never_leaves_its_range() -> None:
    neurons = one({"type": "int", "min": 16, "max": 256, "sampling": "log"})
    assert proposals.snap(neurons, 257) == 256
    assert proposals.snap(neurons, 256.6) == 256
    assert proposals.snap(neurons, 3) == 16
    assert proposals.snap(neurons, 100.4) == 100 and isinstance(proposals.snap(neurons, 100.4), int)


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ({"type": "int", "min": 10, "max": 100, "step": 20}, 95, 90),  # grid 10, 30, ..., 90
        ({"type": "int", "min": 10, "max": 100, "step": 20}, 41, 50),
        ({"type": "int", "min": 32, "max": 512, "step": 2, "sampling": "log"}, 300, 256),  # 32 * 2^k
        ({"type": "int", "min": 32, "max": 512, "step": 2, "sampling": "log"}, 9999, 512),
        ({"type": "float", "min": 0.0, "max": 0.5, "step": 0.1}, 0.26, 0.3),
        ({"type": "float", "min": 1e-4, "max": 1e-1, "sampling": "log"}, 0.2, 0.1),
        ({"type": "float", "min": 1e-4, "max": 1e-1, "sampling": "log"}, -1.0, 1e-4),
        ({"type": "choice", "values": [32, 64]}, 48, 32),  # not a choice: the default
        ({"type": "choice", "values": ["sgd", "adam"]}, "adam", "adam"),
    ],
)
def test_values_are_snapped_to_range_and_step(spec: dict, value: object, expected: object) -> None:
    assert proposals.snap(one(spec), value) == pytest.approx(expected)


def test_clamp_drops_inactive_parameters_and_fills_active_ones() -> None:
    space = params(CONDITIONAL_SPACE)
    values = {"hidden_layers": 1, "neurons_0": 300, "neurons_1": 64, "optimizer": "adam", "momentum": 0.5}
    clamped = proposals.clamp(space, values)
    assert clamped == {"hidden_layers": 1, "neurons_0": 256, "learning_rate": 1e-4, "optimizer": "adam"}


def test_random_values_respect_ranges_steps_and_conditions() -> None:
    import random

    space = params(
        {
            **CONDITIONAL_SPACE,
            "units": {"type": "int", "min": 32, "max": 512, "step": 2, "sampling": "log"},
            "dropout": {"type": "float", "min": 0.0, "max": 0.5, "step": 0.1},
        }
    )
    rng = random.Random(0)
    for _ in range(300):
        values = proposals.random_values(space, rng)
        assert proposals.clamp(space, values) == values
        assert values["units"] in (32, 64, 128, 256, 512)
        assert ("momentum" in values) == (values["optimizer"] == "sgd")
        assert sorted(k for k in values if k.startswith("neurons_")) == [
            f"neurons_{i}" for i in range(values["hidden_layers"])
        ]


# -- initial design -------------------------------------------------------------------------------------


@pytest.mark.parametrize("points", [2, 3, 4, 7])
def test_the_initial_design_is_a_latin_hypercube(points: int) -> None:
    """Every parameter's range is cut into ``points`` slices on its sampling scale, one point in each: two
    initial points try both optimizers, whatever the seed (at random, both are ``sgd`` half the time)."""
    import math
    import random

    space = params({**CONDITIONAL_SPACE, "batch_size": {"type": "choice", "values": [32, 64, 128]}})
    by_name = {p.name: p for p in space}
    for seed in range(20):
        design = [
            proposals.random_values(space, random.Random(seed * 100 + i), (i, points, seed)) for i in range(points)
        ]
        assert all(proposals.clamp(space, v) == v for v in design)
        assert {v["optimizer"] for v in design} == {"sgd", "adam"}
        if points >= 3:
            assert {v["batch_size"] for v in design} == {32, 64, 128}
        rate = by_name["learning_rate"]
        scale = math.log(rate.max) - math.log(rate.min)
        slices = sorted(int((math.log(v["learning_rate"]) - math.log(rate.min)) / scale * points) for v in design)
        assert slices == list(range(points))
        layers = sorted(v["hidden_layers"] for v in design)
        if points >= 3:
            assert set(layers) == {0, 1, 2}  # 0..2: three values, each at least once


@pytest.mark.parametrize(("max_trials", "parameters", "expected"), [(12, 6, 3), (8, 6, 2), (4, 6, 2), (100, 2, 6)])
def test_initial_points_default_from_the_budget(max_trials: int, parameters: int, expected: int) -> None:
    assert proposals.default_initial_points(max_trials, parameters) == expected


@pytest.mark.parametrize(
    ("algorithm", "field"),
    [
        ({"name": "tpe", "initial_points": 0}, "algorithm.initial_points"),
        ({"name": "tpe", "initial_points": 2.5}, "algorithm.initial_points"),
        ({"name": "bayesian", "initial_points": 13}, "algorithm.initial_points"),
        ({"name": "bayesian", "initial_points": 2, "num_initial_points": 2}, "algorithm.num_initial_points"),
        ({"name": "tpe", "alpha": 0.1}, "algorithm.alpha"),
        ({"name": "random", "initial_points": 2}, "algorithm.initial_points"),
    ],
)
def test_bad_initial_points_name_their_field(algorithm: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        StudySpec.from_json(digits_study(algorithm=algorithm, max_trials=12))
    assert [e.field for e in caught.value.errors] == [field]


def submit(store, settings, **overrides):
    return submit_study(store, settings, digits_study(**overrides), lambda pool, n: None)


def claim(store):
    result = claim_next(store, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
    assert isinstance(result, Claim), result
    return result


def score_of(values: dict) -> float:
    """A smooth objective with its optimum at learning_rate 5e-3 and adam."""
    import math

    return 1 - abs(math.log10(values["learning_rate"] / 5e-3)) / 3 - (0.1 if values["optimizer"] == "sgd" else 0)


def run_parallel(store, study_id: int, trials: int, workers: int = 3) -> list[dict]:
    """Claims as ``workers`` workers make them: each finishes its oldest trial, refills, then claims again."""
    running: list[Claim] = []
    seen = []
    for _ in range(trials):
        if len(running) == workers:
            oldest = running.pop(0)
            outcome = TrialOutcome("completed", {"val_accuracy": score_of(oldest.values)}, 0)
            finish_trial(store, study_id, oldest.trial.id, outcome)
            proposals.refill(store, study_id)
        running.append(claim(store))
        seen.append(running[-1].values)
    return seen


@pytest.mark.parametrize("algorithm", ["bayesian", "tpe"])
def test_model_based_search_departs_from_random_after_the_initial_design(store, settings, algorithm) -> None:
    model = submit(store, settings, algorithm=algorithm, max_trials=8, parallelism=3, seed=5, name="model")
    model_values = run_parallel(store, model.id, 8)
    store.cancel_study(model.id)
    state = store.get_study(model.id).oracle_state["proposer"]
    assert state["initial_points"] == 2  # a quarter of 8 trials
    randoms = submit(store, settings, algorithm="random", max_trials=8, parallelism=3, seed=5, name="random")
    random_values = run_parallel(store, randoms.id, 8)
    assert model_values[3:] != random_values[3:]
    keys = [proposals.config_key(v) for v in model_values]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("algorithm", ["bayesian", "tpe"])
def test_parallel_claims_never_repeat_a_configuration_even_in_a_tiny_space(store, settings, algorithm) -> None:
    space = {
        "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
        "learning_rate": {"type": "choice", "values": [1e-3, 5e-3, 1e-2]},
    }
    study = submit(store, settings, search_space=space, algorithm=algorithm, max_trials=6, parallelism=3, seed=2)
    values = run_parallel(store, study.id, 6)
    every = [{"optimizer": o, "learning_rate": lr} for o in ("sgd", "adam") for lr in (1e-3, 5e-3, 1e-2)]
    assert sorted(proposals.config_key(v) for v in values) == sorted(proposals.config_key(v) for v in every)


@pytest.mark.parametrize("algorithm", ["bayesian", "tpe"])
def test_a_seeded_study_repeats_its_sequence_and_the_counter_moves_on(store, settings, algorithm) -> None:
    sequences, counters = [], []
    for name in ("first", "second"):
        study = submit(store, settings, algorithm=algorithm, max_trials=6, parallelism=3, seed=9, name=name)
        sequences.append(run_parallel(store, study.id, 6))
        counters.append(store.get_study(study.id).oracle_state["proposer"]["counter"])
        store.cancel_study(study.id)
    assert sequences[0] == sequences[1]
    # Each proposal drew from its own stream: the stored counter moved past every one of them.
    assert counters[0] == counters[1] >= 6


def test_a_rebuilt_gp_continues_its_random_stream_instead_of_restarting(store, settings) -> None:
    study = submit(store, settings, algorithm={"name": "bayesian", "initial_points": 2}, max_trials=6, seed=4)
    snapshot_study, trials = store.study_snapshot(study.id)
    state = proposals.ProposerState(initial_points=2)
    history = proposals.History.of(snapshot_study, trials, state)
    seed = proposals.study_seed(snapshot_study)
    # Nothing finished: each proposal is a fresh random draw, so continuing streams give new points.
    drawn = [proposals.propose("bayesian", history, proposals.rng_seed(seed, counter)) for counter in range(4)]
    assert len({proposals.config_key(v) for v in drawn}) == 4
    again = proposals.propose("bayesian", history, proposals.rng_seed(seed, 2))
    assert again == drawn[2]


def test_a_claim_without_a_ready_proposal_hands_the_study_back_instead_of_fitting(store, settings) -> None:
    study = submit(store, settings, algorithm={"name": "bayesian", "initial_points": 1}, max_trials=4, parallelism=2)
    first = claim(store)
    finish_trial(store, study.id, first.trial.id, TrialOutcome("completed", {"val_accuracy": 0.5}, 0))
    answer = claim_once(store, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
    assert answer == Propose(study.id)
    assert store.trial_counts(study.id) == {"completed": 1}
    second = claim(store)  # claim_next computes the proposal outside the locks, then claims it
    assert second.trial.number == 1 and proposals.config_key(second.values) != proposals.config_key(first.values)


def test_a_proposal_taken_meanwhile_by_another_worker_is_not_buffered_twice(store, settings) -> None:
    study = submit(store, settings, algorithm={"name": "tpe", "initial_points": 1}, max_trials=4, parallelism=3)
    first = claim(store)
    values = {"hidden_layers": 0, "learning_rate": 0.004, "optimizer": "adam", "batch_size": 32}
    commit = proposals._commit  # the commit step of compute_proposal, given the values it computed
    assert store.with_study_lock(study.id, lambda tx: commit(tx, [values])) is True
    assert store.with_study_lock(study.id, lambda tx: commit(tx, [dict(values)])) is False
    assert store.with_study_lock(study.id, lambda tx: commit(tx, [dict(first.values)])) is False
    assert store.get_study(study.id).oracle_state["proposer"]["proposals"] == [values]


def test_a_batch_keeps_its_new_configurations_in_order_up_to_the_room_left(store, settings) -> None:
    study = submit(store, settings, algorithm={"name": "tpe", "initial_points": 1}, max_trials=4, parallelism=3)
    first = claim(store)
    a = {"hidden_layers": 0, "learning_rate": 0.004, "optimizer": "adam", "batch_size": 32}
    b, c = {**a, "learning_rate": 0.005}, {**a, "learning_rate": 0.006}
    batch = [a, dict(first.values), dict(a), b, c]  # a trial's configuration and a repeat are left out
    counter = store.get_study(study.id).oracle_state["proposer"]["counter"]
    assert store.with_study_lock(study.id, lambda tx: proposals._commit(tx, batch)) is True
    # 4 trials: one claimed, so the budget owes 3, and the buffer holds no more than the parallelism (3).
    assert store.get_study(study.id).oracle_state["proposer"]["proposals"] == [a, b, c]
    assert store.get_study(study.id).oracle_state["proposer"]["counter"] == counter + 3
    assert store.with_study_lock(study.id, lambda tx: proposals._commit(tx, [{**a, "batch_size": 64}])) is False


@pytest.mark.parametrize("algorithm", ["bayesian", "tpe"])
def test_a_batch_for_waiting_workers_has_no_repeats_and_counts_the_earlier_ones_as_running(algorithm) -> None:
    history = tpe_history(40)
    fitted: dict = {}
    first = proposals.propose(algorithm, history, 1, fitted)
    more = proposals._propose_more(algorithm, history, history.taken(), [2, 3, 4, 5], first, fitted)
    keys = [proposals.config_key(v) for v in [first, *more]]
    assert len(more) >= 3 and len(set(keys)) == len(keys)
    assert not set(keys) & history.taken()
    if algorithm == "bayesian":  # the batch used the kernel fitted for the first proposal, not a new fit
        assert "kernel" in fitted


# -- TPE rebuild -----------------------------------------------------------------------------------------


def tpe_history(trials: int) -> proposals.History:
    import random

    space = SearchSpace.from_json(CONDITIONAL_SPACE)
    rng = random.Random(1)
    completed, pending, failed = [], [], []
    for index in range(trials):
        values = proposals.random_values(proposals.tuned(space), rng)
        if index % 10 == 9:
            pending.append(values)
        elif index % 10 == 8:
            failed.append(values)
        else:
            completed.append((values, score_of(values)))
    return proposals.History(space, "max", completed, pending, failed, 5, {})


def test_tpe_rebuilds_its_study_from_the_rows_with_running_trials_as_running() -> None:
    from optuna.trial import TrialState

    history = tpe_history(200)
    study, _ = proposals.tpe_study(history, seed=1)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 160 and states.count(TrialState.RUNNING) == 20
    assert states.count(TrialState.FAIL) == 20
    for trial in study.trials:
        assert ("momentum" in trial.params) == (trial.params["optimizer"] == "sgd")
    values = proposals.propose("tpe", history, seed=1)
    assert proposals.clamp(history.params, values) == values
    assert ("momentum" in values) == (values["optimizer"] == "sgd")
    assert values == proposals.propose("tpe", history, seed=1)  # reproducible with the seed


def test_tpe_rebuild_of_a_thousand_trials_is_timed_for_the_report() -> None:
    """Not a timed assertion: the number goes to the test log (the claim benchmark reports it too)."""
    history = tpe_history(1000)
    started = time.perf_counter()
    study, _ = proposals.tpe_study(history, seed=1)
    elapsed = time.perf_counter() - started
    assert len(study.trials) == 1000
    print(f"TPE rebuild of 1000 trials: {elapsed * 1000:.1f} ms")


@pytest.mark.parametrize("sampler", ["bayesian", "tpe"])
def test_asha_with_a_model_sampler_fits_it_outside_the_claim(store, settings, monkeypatch, sampler) -> None:
    """ASHA's new configurations come from the model, which no claim fits: a claim without a ready proposal
    hands the study back (Propose), the worker computes one, and promotions go on as before."""
    in_claim = []
    fits = []
    real = {"bayesian": proposals.propose_gp, "tpe": proposals.propose_tpe}[sampler]

    def watched(history, seed, *fitted):
        assert not in_claim, "a model was fitted inside a claim"
        fits.append(len(history.completed))
        return real(history, seed, *fitted)

    monkeypatch.setattr(proposals, {"bayesian": "propose_gp", "tpe": "propose_tpe"}[sampler], watched)
    algorithm = {"name": "asha", "min_epochs": 1, "max_epochs": 4, "reduction_factor": 2, "sampler": sampler}
    study = submit(store, settings, algorithm=algorithm, max_trials=14, parallelism=2, seed=3)
    answers = []
    running: list[Claim] = []
    while True:
        in_claim.append(True)
        answer = claim_once(store, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
        in_claim.clear()
        answers.append(type(answer).__name__)
        if isinstance(answer, Propose):
            proposals.compute_proposal(store, study.id)
            continue
        if isinstance(answer, Claim):
            running.append(answer)
            if len(running) < 2:
                continue
        if not running:
            break
        oldest = running.pop(0)
        outcome = TrialOutcome("completed", {"val_accuracy": score_of(oldest.values)}, 0)
        if finish_trial(store, study.id, oldest.trial.id, outcome).more_work:
            proposals.refill(store, study.id)
    trials = store.list_trials(study.id, sort="number", limit=100).items
    assert len(trials) == 14 and {t.status for t in trials} == {"completed"}
    promotions = [t for t in trials if "tuner/trial_id" in t.hyperparameters]
    new = [t for t in trials if "tuner/trial_id" not in t.hyperparameters]
    assert promotions and all(t.hyperparameters["tuner/rung"] > 0 for t in promotions)
    keys = [proposals.config_key(t.hyperparameters) for t in new]
    assert len(set(keys)) == len(keys)  # no configuration twice, promotions aside
    state = store.get_study(study.id).oracle_state
    assert state["proposer"]["initial_points"] >= 2 and set(state) == {"proposer"}  # ASHA keeps no state
    assert fits and max(fits) >= 3  # the model saw finished configurations, each once
    assert all(t.hyperparameters["learning_rate"] <= 1e-2 for t in trials)  # the space's own range


def test_asha_with_a_model_sampler_draws_its_given_initial_points_before_the_model(store, settings) -> None:
    """``initial_points`` on an ASHA study with a sampler: that many configurations are drawn at random (the
    claim answers with them at once), and only the next new configuration waits for the model."""
    algorithm = {"name": "asha", "max_epochs": 9, "reduction_factor": 3, "sampler": "tpe", "initial_points": 5}
    study = submit(store, settings, algorithm=algorithm, max_trials=40, parallelism=8)
    assert store.get_study(study.id).oracle_state is None
    claims = []
    while True:
        answer = claim_once(store, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
        if not isinstance(answer, Claim):
            break
        claims.append(answer)
    assert isinstance(answer, Propose) and len(claims) == 5  # five random configurations, then the model's turn
    assert store.get_study(study.id).oracle_state["proposer"]["initial_points"] == 5
    keys = {proposals.config_key(c.values) for c in claims}
    assert len(keys) == 5 and all(c.values["tuner/rung"] == 0 for c in claims)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_model_fits_run_in_a_thread_of_lower_cpu_priority() -> None:
    """A fit yields the CPU to claims, reports and training on a shared host: it runs in the process's fit
    thread, nicer than the caller, and its result and its errors come back to the caller."""

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = niceness()
    assert proposals.in_fit_thread(niceness) == min(19, mine + proposals.FIT_NICENESS)
    assert niceness() == mine
    assert proposals.in_fit_thread(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        proposals.in_fit_thread(lambda: 1 / 0)


def test_a_fit_caps_blas_to_its_own_thread_and_gives_the_threads_back() -> None:
    """BLAS's pool threads keep the priority of the thread that started them: a niced fit must not hand its
    linear algebra to them."""
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    proposals.in_fit_thread(lambda: None)  # the fit thread finds the libraries' pools on its first fit
    before = blas_threads()
    if not before or max(before) == 1:
        pytest.skip("BLAS runs one thread here anyway (one core)")
    assert proposals.in_fit_thread(blas_threads) == [1] * len(before)
    assert blas_threads() == before


CLASSIC_SPACE = {
    "hidden_layers": {"type": "int", "min": 0, "max": 8},
    "neurons": {"type": "int", "min": 16, "max": 256, "sampling": "log"},
    "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
    "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
    "batch_size": {"type": "choice", "values": [32, 64, 128]},
}


def test_the_gp_learns_from_two_results_instead_of_going_flat() -> None:
    """Two finished trials (a digits study's initial design): unbounded, the GP's length scale collapsed to its
    1e-5 bound, its mean went flat, and each seed's proposal landed anywhere (the lowest learning rate, sgd). With
    the floor, the fit keeps a usable length scale and every seed proposes on the good trial's side."""
    good = {"hidden_layers": 7, "neurons": 38, "learning_rate": 0.00064, "optimizer": "adam", "batch_size": 32}
    bad = {"hidden_layers": 2, "neurons": 215, "learning_rate": 0.00377, "optimizer": "sgd", "batch_size": 128}
    history = proposals.History(SearchSpace.from_json(CLASSIC_SPACE), "max", [(good, 0.87), (bad, 0.42)], [], [], 2, {})
    for seed in range(3):
        fitted: dict = {}
        values = proposals.propose("bayesian", history, seed, fitted)
        assert fitted["kernel"].length_scale >= proposals.GP_LENGTH_SCALE_FLOOR
        assert (values["optimizer"], values["batch_size"]) == ("adam", 32), values


def test_a_gp_fit_starts_from_the_studys_last_kernel_and_proposes_what_a_fit_from_scratch_does(
    store, settings, monkeypatch
) -> None:
    """The kernel's fitted hyperparameters are kept with the study; the next fit starts from them with one random
    restart instead of Keras Tuner's twenty (most of a GP proposal's time), and finds the same kernel."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    study = submit(
        store, settings, algorithm={"name": "bayesian", "initial_points": 2}, max_trials=12, parallelism=3, seed=3
    )
    run_parallel(store, study.id, 8)
    theta = store.get_study(study.id).oracle_state["proposer"]["kernel_theta"]
    assert isinstance(theta, list) and len(theta) == 1
    starts = []
    fit = GaussianProcessRegressor.fit

    def recording(self, x, y):  # noqa: ANN001, ANN202 - sklearn's signature
        starts.append((self.n_restarts_optimizer, list(self.kernel.theta)))
        return fit(self, x, y)

    monkeypatch.setattr(GaussianProcessRegressor, "fit", recording)
    snapshot_study, trials = store.study_snapshot(study.id)
    history = proposals.History.of(snapshot_study, trials, proposals.ProposerState.of(snapshot_study))
    warm, cold = {"theta": theta}, {}
    warm_values = proposals.propose("bayesian", history, 11, warm)
    cold_values = proposals.propose("bayesian", history, 11, cold)
    assert starts[0] == (proposals.GP_WARM_RESTARTS, pytest.approx(theta))
    assert starts[1][0] == 20  # from scratch: Keras Tuner's oracle's restarts
    assert warm["theta"] == pytest.approx(cold["theta"], abs=1e-5)
    # The same configuration; the acquisition's optimum may differ in the last digits between CPUs.
    assert warm_values == pytest.approx(cold_values, rel=1e-6)
    proposals.refill(store, study.id)
    assert starts[2] == (proposals.GP_WARM_RESTARTS, pytest.approx(theta))  # the stored kernel, in the product path
