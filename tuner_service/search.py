"""A study's search algorithm: a Keras Tuner oracle whose state lives in the database, or none.

Any worker process may claim the next trial or report a finished one. Each does so under the study's
row lock (no lock spans the deployment; see :func:`claim_once`). Only grid studies restore a Keras Tuner
oracle from the stored state, ask it, and store the new state before the lock is released. Random search,
Hyperband and ASHA need none: the claim draws a configuration from the trial number's own random stream and
checks with one indexed lookup that no trial has it (:func:`tuner_service.proposals.draw`), ASHA's promotion
is one query over the trial rows (:mod:`tuner_service.asha`) and Hyperband keeps its open brackets only
(:mod:`tuner_service.hyperband`), so their claims and reports cost the same however many trials the study
has. Model-based studies (``bayesian``, ``tpe``) never fit a model
under a lock: the claim takes a proposal computed beforehand (see :mod:`tuner_service.proposals`), or
answers :class:`Propose` so that the worker computes one after it released the lock and claims again.
Keras Tuner is imported only when an oracle is needed (in workers), never by the API.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from tuner_service import hyperband, proposals
from tuner_service.asha import Rungs
from tuner_service.errors import NotFound
from tuner_service.gpu_slots import WAIT_FOR_SLOTS_S, GpuPlace, SlotGate, open_gate
from tuner_service.hyperband import Hyperband
from tuner_service.hyperband import Result as HyperbandResult
from tuner_service.queue import TeamLoad, WaitingStudy, blocked_reason, runnable
from tuner_service.space import SearchSpace
from tuner_service.store import Store, StudyRecord, StudyTransaction, TrialRecord
from tuner_service.store.queue import Load
from tuner_service.store.records import TERMINAL_STUDY
from tuner_service.store.store import LEASE_AFTER_FIT, LOCKED, ClaimAgain

WAIT_FOR_ROUND_S = 2.0
# Algorithms whose claims and reports restore no Keras Tuner oracle (their state is constant-size).
WITHOUT_ORACLE = ("random", "asha", "hyperband", *proposals.MODEL_BASED)
ORACLE_STATUS_OF = {
    "completed": "COMPLETED",
    "failed": "FAILED",
    "cancelled": "FAILED",
    "pruned": "COMPLETED",
}


@dataclass(frozen=True)
class Claim:
    """A trial this worker now owns, with everything needed to train it."""

    trial: TrialRecord
    study: StudyRecord

    @property
    def values(self) -> dict[str, Any]:
        return self.trial.hyperparameters

    @property
    def resumes(self) -> str | None:
        """The oracle trial id whose checkpoint this (Hyperband) trial continues from."""
        return self.values.get("tuner/trial_id")


@dataclass(frozen=True)
class Wait:
    """No trial can start now (Hyperband waits for a round to finish); ask again later. ``study_ids``: the
    studies the message waits for (its worker re-enqueues it, so they have a message on the broker)."""

    seconds: float
    study_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class HoldBack(Wait):
    """This GPU process must not claim a study ranked after the one it cannot fit now (its GPU drains until
    that study's trial fits; see :mod:`tuner_service.gpu_slots`)."""


@dataclass(frozen=True)
class Propose:
    """The study served next has no proposal ready: compute one outside the locks, then claim again."""

    study_id: int


@dataclass(frozen=True)
class Done:
    """Nothing left to do for this message: the study is finished or the message was a duplicate."""

    reason: str


@dataclass(frozen=True)
class TrialOutcome:
    """What training produced: the best epoch's metrics (averaged over executions) or an error."""

    status: str  # completed | pruned | failed | cancelled
    metrics: dict[str, float] | None = None
    best_epoch: int | None = None
    error: str | None = None
    model_path: str | None = None
    environment: dict[str, Any] | None = None


@dataclass(frozen=True)
class Finished:
    """The trial's stored record and whether the study needs another trial after it."""

    trial: TrialRecord
    study_status: str
    more_work: bool


def hyperband_rounds(max_epochs: int, factor: int) -> Iterator[tuple[int, int, int, int]]:
    """(bracket, round, trials, epochs) of each round of one Hyperband iteration, sized as Keras Tuner's
    oracle sizes them (see :class:`tuner_service.hyperband.Hyperband`)."""
    hb = Hyperband(max_epochs, factor)
    for bracket in range(hb.num_brackets()):
        for round_num in range(bracket + 1):
            yield bracket, round_num, hb.size(bracket, round_num), hb.epochs(bracket, round_num)


def hyperband_budget(max_epochs: int, factor: int, iterations: int = 1) -> int:
    """How many trials Keras Tuner's Hyperband runs for these settings."""
    return sum(trials for _, _, trials, _ in hyperband_rounds(max_epochs, factor)) * iterations


def make_oracle(study: StudyRecord) -> Any:
    """A fresh oracle for a grid or Hyperband study whose files are never written (the DB keeps its state)."""
    import keras_tuner as kt

    spec = study.spec
    common: dict[str, Any] = {
        "objective": kt.Objective(study.objective_name, direction=study.direction),
        "hyperparameters": _hyperparameters(json.dumps(spec["search_space"]), _is_mlp(spec)),
        "seed": spec.get("seed"),
        "max_consecutive_failed_trials": 3,
    }
    options = {k: v for k, v in spec["algorithm"].items() if k != "name"}
    name = spec["algorithm"]["name"]
    if name == "hyperband":
        base: type = kt.oracles.HyperbandOracle
    elif name == "grid":  # the other algorithms keep no oracle (see WITHOUT_ORACLE)
        common["max_trials"] = study.max_trials
        base = kt.oracles.GridSearchOracle
    else:
        raise ValueError(f"no Keras Tuner oracle for algorithm {name!r}")

    class DatabaseOracle(base):  # type: ignore[misc, valid-type]
        def save(self) -> None:  # the state goes to the study row instead
            pass

        def set_state(self, state: dict[str, Any]) -> None:
            # Keras Tuner parses the stored space again on every restore (about a millisecond per entry, on
            # every claim and report): parse each distinct one once per process. This also leaves the stored
            # state untouched (Keras Tuner's parsing rewrites the conditions inside the dict it is given).
            super().set_state({**state, "hyperparameters": {"space": [], "values": {}}})
            self.hyperparameters = _stored_hyperparameters(json.dumps(state["hyperparameters"], sort_keys=True))
            if name == "grid":
                self._set_grid_state(state)

        def _save_trial(self, trial: Any) -> None:  # each trial's state goes to its row
            pass

        if name == "grid":
            # Keras Tuner's grid oracle keeps its walk through the grid outside get_state(), so a restored
            # one would stop after the first trial; carry it in the state.
            def get_state(self) -> dict[str, Any]:
                state = super().get_state()
                walk = self._ordered_ids
                state["grid"] = {
                    "populate_next": list(self._populate_next),
                    "memory": list(walk._memory),
                    "next_index": [[k, v] for k, v in walk._next_index.items()],
                    "last_index": walk._last_index,
                }
                return state

            def _set_grid_state(self, state: dict[str, Any]) -> None:
                grid = state.get("grid")
                if grid is None:
                    return
                self._populate_next = list(grid["populate_next"])
                walk = self._ordered_ids
                walk._memory = list(grid["memory"])
                walk._data_to_index = {data: index for index, data in enumerate(walk._memory)}
                walk._next_index.clear()
                walk._next_index.update({k: v for k, v in grid["next_index"]})
                walk._last_index = grid["last_index"]

    oracle = DatabaseOracle(**common, **options)
    oracle.verbose = 0
    return oracle


WARM_START_KEY = "warm_start_trials"


def _is_mlp(spec: dict[str, Any]) -> bool:
    """Whether the study tunes the built-in MLP, whose parameter names have fixed domains."""
    from tuner_service.hypermodels.registry import model_ref

    return model_ref(spec).is_builtin_mlp


def _hyperparameters(space_json: str, mlp_domains: bool = True) -> Any:
    """A fresh ``HyperParameters`` for the space, sharing entries parsed once per process: every claim
    builds an oracle under the study's lock, and Keras' deserialization costs about a millisecond per entry."""
    return _sharing_entries(_parsed_space(space_json, mlp_domains))


def _sharing_entries(parsed: Any) -> Any:
    """A new ``HyperParameters`` with ``parsed``'s entries (what ``HyperParameters.from_config`` makes, without
    parsing again) and its own copy of the values."""
    from keras_tuner.engine.hyperparameters import HyperParameters

    hyperparameters = HyperParameters()
    for hp in parsed.space:
        hyperparameters._hps[hp.name].append(hp)
        hyperparameters._space.append(hp)
    hyperparameters.values = dict(parsed.values)
    return hyperparameters


def _stored_hyperparameters(config_json: str) -> Any:
    """A fresh ``HyperParameters`` equal to ``HyperParameters.from_config(config)``, sharing parsed entries."""
    return _sharing_entries(_parsed_config(config_json))


@functools.lru_cache(maxsize=256)
def _parsed_config(config_json: str) -> Any:
    import keras_tuner as kt

    return kt.HyperParameters.from_config(json.loads(config_json))


@functools.lru_cache(maxsize=256)
def _parsed_space(space_json: str, mlp_domains: bool) -> Any:
    import keras_tuner as kt

    space = SearchSpace.from_json(json.loads(space_json), max_parameters=10_000, mlp_domains=mlp_domains)
    return kt.HyperParameters.from_config(space.to_keras_tuner_config())


def restore_oracle(tx: StudyTransaction, *, with_metrics: str | None = None) -> Any:
    """The study's oracle as it was when its state was last saved (a new one, seeded, on first use).

    Runs under the queue or study lock, so it must stay cheap however many trials the study has: every
    trial shares the oracle's (fixed) space instead of deserializing its own copy, and only the trial
    ``with_metrics`` (the one being reported) gets its metric history back; the oracles rank the others
    by their score alone.
    """
    oracle = make_oracle(tx.study)
    # The proposer's buffer (an ASHA study with a model sampler) shares the column; the oracle never sees it.
    state = {k: v for k, v in (tx.study.oracle_state or {}).items() if k != proposals.STATE_KEY} or None
    seeds = state.get(WARM_START_KEY, []) if state else _warm_start_seeds(tx, oracle)
    for seed in seeds:
        oracle.trials[seed["trial_id"]] = _trial_from_state(oracle, seed, with_metrics=False)
    if seeds and oracle.max_trials:
        oracle.max_trials += len(seeds)  # seeds are the oracle's trials, but not this study's budget
    study_key = (tx.database, tx.study.id, str(tx.study.created_at))
    cached = _FINISHED_TRIALS.get(study_key, {})
    for trial_id, status, trial_state in tx.oracle_trial_states(skip=set(cached)):
        if trial_state is None:  # finished, and already restored once by this process
            oracle.trials[trial_id] = cached[trial_id]
            continue
        trial = _trial_from_state(oracle, trial_state, with_metrics=trial_id == with_metrics)
        oracle.trials[trial_id] = trial
        if status in FINISHED_STATUSES and trial_id != with_metrics:
            if len(_FINISHED_TRIALS) > 1000:
                _FINISHED_TRIALS.clear()
            _FINISHED_TRIALS.setdefault(study_key, {})[trial_id] = trial
    if state:
        oracle.set_state(state)
    else:
        for seed in seeds:
            oracle._record_values(oracle.trials[seed["trial_id"]])  # random search will not repeat them
    oracle.warm_start_states = seeds
    return oracle


# Finished trials never change, and every claim restores all of a study's trials: each process keeps the
# ones it restored, keyed by database, study and the study's creation time (ids repeat across databases).
FINISHED_STATUSES = frozenset({"completed", "failed", "cancelled", "pruned"})
_FINISHED_TRIALS: dict[tuple[str, int, str], dict[str, Any]] = {}


def _trial_from_state(oracle: Any, state: dict[str, Any], *, with_metrics: bool) -> Any:
    """``Trial.from_state`` without deserializing the space again (the costly part: ~1 ms per trial)."""
    from keras_tuner.engine.trial import Trial
    from keras_tuner.src.engine.metrics_tracking import MetricsTracker

    hyperparameters = _sharing_entries(oracle.hyperparameters)
    hyperparameters.values = dict(state["hyperparameters"]["values"])
    trial = Trial(hyperparameters, trial_id=state["trial_id"], status=state["status"])
    if with_metrics:
        trial.metrics = MetricsTracker.from_config(state["metrics"])
    trial.score, trial.best_step, trial.message = state["score"], state["best_step"], state.get("message")
    return trial


def trial_state(trial: Any) -> dict[str, Any]:
    """A trial's state as stored on its row: its values without another copy of the study's space."""
    state = trial.get_state()
    state["hyperparameters"] = {"values": state["hyperparameters"]["values"]}
    return state


def save_oracle(tx: StudyTransaction, oracle: Any) -> None:
    state = {**oracle.get_state(), WARM_START_KEY: oracle.warm_start_states}
    proposer = (tx.study.oracle_state or {}).get(proposals.STATE_KEY)
    if proposer is not None:
        state[proposals.STATE_KEY] = proposer
    tx.set_oracle_state(state)


def _warm_start_seeds(tx: StudyTransaction, oracle: Any) -> list[dict[str, Any]]:
    """Finished trials of the studies named in ``warm_start`` that fit this space, as oracle trial states."""
    from keras_tuner.engine.trial import Trial

    study_ids = tx.study.spec.get("warm_start", {}).get("studies", [])
    if not study_ids:
        return []
    states = []
    for record in tx.finished_trials(study_ids):
        values = _fit_values(oracle.hyperparameters, record.hyperparameters)
        if values is None or record.score is None:
            continue
        hyperparameters = oracle.hyperparameters.copy()
        hyperparameters.values = values
        trial = Trial(hyperparameters, trial_id=f"seed-{record.study_id}-{record.number}", status="COMPLETED")
        trial.metrics.register(tx.study.objective_name, direction=tx.study.direction)
        trial.metrics.update(tx.study.objective_name, record.score, step=record.best_epoch or 0)
        trial.score, trial.best_step = record.score, record.best_epoch or 0
        states.append(trial.get_state())
    return states


def _fit_values(space: Any, values: dict[str, Any]) -> dict[str, Any] | None:
    """``values`` restricted to this space, defaults for what they lack; None if one lies outside it."""
    fitted: dict[str, Any] = {}
    for hp in space.space:
        if hp.name not in values:
            fitted[hp.name] = hp.default
            continue
        value = values[hp.name]
        kind = type(hp).__name__
        if kind == "Choice" and value not in hp.values:
            return None
        if kind in ("Int", "Float") and not (hp.min_value <= value <= hp.max_value):
            return None
        if kind == "Fixed" and value != hp.value:
            return None
        if kind == "Boolean" and not isinstance(value, bool):
            return None
        fitted[hp.name] = value
    active = space.copy()
    active.values = fitted
    return {name: v for name, v in fitted.items() if active.is_active(name)}


# A worker that found no proposal ready computes one (or waits for the process computing one) and claims again
# at most this often, then waits.
PROPOSE_ROUNDS = 3
WAIT_FOR_PROPOSAL_S = 0.5
# How long a worker that found another process fitting the study's model waits for that fit before it claims
# again (the fit usually ends well before; a process that dies releases its lease at once).
WAIT_FOR_FIT_S = 10.0


def claim_next(
    store: Store,
    pool: str,
    *,
    ticket: str,
    worker: str,
    gpu: str | None = None,
    heartbeat_timeout_s: float,
    window_s: float = 3600.0,
    hypermodels: frozenset[str] | None = None,
    proposal_delay_s: float = 0.0,
    place: GpuPlace | None = None,
) -> Claim | Wait | Done:
    """Give a free worker of ``pool`` its next trial, from whichever study the queue serves next.

    Idempotent per ``ticket``: a redelivered message never creates a second trial. A worker that names
    the ``hypermodels`` it offers skips studies of other hypermodels (they wait for a worker that has them).
    When the study served next needs a model-based proposal, this worker computes it with no lock held (or, if
    another process is computing one, waits for it) and claims again (:func:`claim_after_propose`). A GPU
    worker names its ``place``: a trial starts only if its GPU slots are free there (:mod:`tuner_service.gpu_slots`).
    """

    def claim() -> Claim | Wait | Done | Propose:
        return claim_once(
            store,
            pool,
            ticket=ticket,
            worker=worker,
            gpu=gpu,
            heartbeat_timeout_s=heartbeat_timeout_s,
            window_s=window_s,
            hypermodels=hypermodels,
            place=place,
        )

    return claim_through_proposals(store, claim, delay_s=proposal_delay_s)


def claim_through_proposals(
    store: Store,
    claim: Callable[[], Claim | Wait | Done | Propose],
    *,
    delay_s: float = 0.0,
    on_proposal: Callable[[float], None] | None = None,
) -> Claim | Wait | Done:
    """``claim()``, and while it answers :class:`Propose` (up to :data:`PROPOSE_ROUNDS` times), the study's
    proposal fitted or waited for and a claim again (:func:`claim_after_propose`); a :class:`Wait` if the
    proposals kept going to others. ``on_proposal(seconds)``: after each such round, the part of it spent
    outside ``claim()`` calls, on the fit or the wait for it (the claim benchmark reports it)."""
    in_claims = [0.0]

    def timed_claim() -> Claim | Wait | Done | Propose:
        started = time.perf_counter()
        try:
            return claim()
        finally:
            in_claims[0] += time.perf_counter() - started

    result = claim()
    for _ in range(PROPOSE_ROUNDS):
        if not isinstance(result, Propose):
            return result
        started, claimed = time.perf_counter(), in_claims[0]
        result = claim_after_propose(store, result.study_id, timed_claim, delay_s=delay_s)
        if on_proposal is not None:
            on_proposal(time.perf_counter() - started - (in_claims[0] - claimed))
    return result if not isinstance(result, Propose) else Wait(WAIT_FOR_PROPOSAL_S, (result.study_id,))


def claim_after_propose(
    store: Store,
    study_id: int,
    claim: Callable[[], Claim | Wait | Done | Propose],
    *,
    delay_s: float = 0.0,
    wait_s: float = WAIT_FOR_FIT_S,
) -> Claim | Wait | Done | Propose:
    """What a worker whose claim answered :class:`Propose` for ``study_id`` does next: fit the study's model
    outside every lock, then ``claim()`` again; or, while another process fits it, wait for that fit and claim
    what it proposed.

    The fit proposes one configuration for each process waiting for it (:func:`proposals.fit_proposals`), and
    when it ends the waiting processes get the study's lease one at a time, in the order they began to wait,
    and claim while they hold it: they take their proposals one after another rather than all at the same
    instant on the study's row lock, where each would queue behind the others (and pass over to the team's
    other studies meanwhile). One that finds the proposals taken (a worker that just finished a trial claimed
    one) holds the lease already, so it fits the model itself, for itself and those still waiting."""
    with store.proposal_lease(study_id, wait_s=wait_s) as lease:
        if lease == LEASE_AFTER_FIT:
            result = claim()
            if not (isinstance(result, Propose) and result.study_id == study_id):
                return result
        if lease is not None:
            proposals.fit_proposals(store, study_id, delay_s)
    return claim()


def claim_once(
    store: Store,
    pool: str,
    *,
    ticket: str,
    worker: str,
    gpu: str | None = None,
    heartbeat_timeout_s: float,
    window_s: float = 3600.0,
    hypermodels: frozenset[str] | None = None,
    place: GpuPlace | None = None,
) -> Claim | Wait | Done | Propose:
    """One pass over the queue: a claim, or what the worker should do instead (never fits a model).

    No lock spans the deployment. The queue is read without one; then each study the worker may serve is
    tried in the scheduler's order under its own row lock, where what the read said is checked again (the
    study's parallelism and budget, its team's quota). A study whose lock another transaction holds is passed
    over for a later study of the same priority, so concurrent claims spread over the studies instead of queueing
    behind one: first over the same team's studies (one statement), then over the next teams' in fair-share order;
    a study of a lower priority never overtakes it (the claim waits for the lock first). A study found locked is
    being served at that moment (its lock is held by a claim, or briefly by a report that needs it or a user's
    change to the study), so serving the next team meanwhile keeps the workers busy without taking a trial from
    the team whose turn it was.
    """
    try:
        return _claim_next(
            store,
            pool,
            ticket=ticket,
            worker=worker,
            gpu=gpu,
            heartbeat_timeout_s=heartbeat_timeout_s,
            window_s=window_s,
            hypermodels=hypermodels,
            place=place,
        )
    except IntegrityError:  # the same message claimed at the same moment by another worker (unique ticket)
        return Done("message already handled by another worker")


def _claim_next(
    store: Store,
    pool: str,
    *,
    ticket: str,
    worker: str,
    gpu: str | None,
    heartbeat_timeout_s: float,
    window_s: float,
    hypermodels: frozenset[str] | None = None,
    place: GpuPlace | None = None,
) -> Claim | Wait | Done | Propose:
    # Each transaction below takes the GPU's lock (GPU workers only) before the study's: one order for all.
    def gate(session: Any) -> SlotGate:
        return open_gate(session, place)

    mine, studies, teams = store.claim_view(ticket, pool, window_s)
    if mine is not None:
        # The broker delivered this message again: resume only a trial nobody is working on.
        return store.with_study_lock(
            mine.study_id,
            lambda tx, slots: _resume_redelivered(tx, slots, mine.id, ticket, worker, gpu, heartbeat_timeout_s),
            before=gate,
        )
    waited: list[int] = []
    busy: list[WaitingStudy] = []

    def attempt(candidates: list[WaitingStudy], *, skip_locked: bool) -> Any:
        """Claim in the first of ``candidates`` (one rank, by id) whose lock is free, or wait for the first's
        lock; (the study tried, what it answered), or :data:`LOCKED` when every one is locked. A claim that does
        not wait for the lock is optimistic first (the study's load comes with its lock, a random draw is inserted
        unchecked), and if that proved wrong (:class:`ClaimAgain`), made once more with everything read apart. One
        that waits reads everything apart at once: the load its lock statement read is from before the wait, so it
        would be stale whenever the lock's holder was a claim."""
        team = teams.get(candidates[0].team_id)

        def claim_in(tx: StudyTransaction, slots: SlotGate) -> tuple[int, Any]:
            found = _claim_candidate(
                tx, slots, team, ticket=ticket, worker=worker, gpu=gpu, window_s=window_s, hypermodels=hypermodels
            )
            return tx.study.id, found

        for optimistic in (True, False) if skip_locked else (False,):
            try:
                return store.with_study_lock(
                    candidates[0].study_id,
                    claim_in,
                    skip_locked=skip_locked,
                    before=gate,
                    or_later=[c.study_id for c in candidates[1:]],
                    optimistic=optimistic,
                )
            except ClaimAgain:
                continue
        raise AssertionError("unreachable: the second try reads everything apart")

    def settle(candidate_id: int, result: Any) -> Claim | Wait | Propose | None:
        """The answer to give now, or None to try the next study."""
        if isinstance(result, (Claim, Propose, HoldBack)):
            return result
        if isinstance(result, Wait):
            waited.append(candidate_id)
        return None

    def wait_for_busy() -> Claim | Wait | Propose | None:
        """Wait for the locks of the studies passed over, in order; the first answer to give, if any."""
        for candidate in busy:
            try:
                tried = attempt([candidate], skip_locked=False)
            except NotFound:  # deleted since the queue was read
                continue
            if (answer := settle(*tried)) is not None:
                return answer
        busy.clear()
        return None

    def try_team(candidates: list[WaitingStudy]) -> Claim | Wait | Propose | None:
        """One team's studies of one priority in order, each found locked passed over (into ``busy``), the first
        free one's lock taken in the statement that finds it."""
        while candidates:
            tried = attempt(candidates, skip_locked=True)
            if tried is LOCKED:
                busy.extend(candidates)
                return None
            study_id, result = tried
            at = next(i for i, c in enumerate(candidates) if c.study_id == study_id)
            busy.extend(candidates[:at])
            if (answer := settle(study_id, result)) is not None:
                return answer
            candidates = candidates[at + 1 :]
        return None

    for _, same_priority in itertools.groupby(runnable(studies, teams), key=lambda c: c.priority):
        if busy and (answer := wait_for_busy()) is not None:
            return answer  # a study of a lower priority never overtakes a locked one
        for _, same_team in itertools.groupby(same_priority, key=lambda c: c.team_id):
            if (answer := try_team(sorted(same_team, key=lambda c: c.study_id))) is not None:
                return answer
    if (answer := wait_for_busy()) is not None:
        return answer
    if waited:
        return Wait(WAIT_FOR_ROUND_S, tuple(waited))
    return Done(f"no study of pool {pool!r} can start a trial now")


def _resume_redelivered(
    tx: StudyTransaction,
    slots: SlotGate,
    trial_id: int,
    ticket: str,
    worker: str,
    gpu: str | None,
    heartbeat_timeout_s: float,
) -> Claim | Wait | Done:
    mine = tx.trial(trial_id)
    if mine.status != "running" or _is_fresh(mine, heartbeat_timeout_s):
        return Done(f"message already handled by trial {mine.id}")
    if not slots.admits(tx.study, replacing=mine.id):
        return Wait(WAIT_FOR_SLOTS_S, (tx.study.id,))
    return slots.took(Claim(tx.restart_trial(mine.id, ticket=ticket, worker=worker, gpu=gpu), tx.study))


def _claim_candidate(
    tx: StudyTransaction,
    slots: SlotGate,
    team: TeamLoad | None,
    *,
    ticket: str,
    worker: str,
    gpu: str | None,
    window_s: float,
    hypermodels: frozenset[str] | None,
) -> Claim | Wait | Done | Propose | None:
    """Under the study's lock: check again what the queue read said, then claim (None: not this study)."""
    study = tx.study
    if hypermodels is not None and _hypermodel_of(study) not in hypermodels:
        return None
    if not slots.admits(study):
        if slots.holds_back(study):
            return HoldBack(WAIT_FOR_SLOTS_S, (study.id,))  # the GPU drains until the study served first fits
        return Wait(WAIT_FOR_SLOTS_S, (study.id,))  # its GPU's first process can start it once free
    load = tx.load()
    if load.running >= study.parallelism and not study.is_terminal:
        return None
    if team is not None and (
        team.max_concurrent_trials is not None or (study.pool == "gpu" and team.gpu_hours_per_day is not None)
    ):
        team = tx.team_load(window_s)
        waiting = WaitingStudy(
            study.id, study.name, study.team_id, study.priority, study.pool, study.status,
            load.running, study.parallelism, 1,
        )  # fmt: skip
        if blocked_reason(waiting, team) is not None:
            return None
    result = _claim_in_study(tx, load, ticket=ticket, worker=worker, gpu=gpu)
    return slots.took(result) if isinstance(result, Claim) else result


def _hypermodel_of(study: StudyRecord) -> str:
    from tuner_service.hypermodels.registry import model_ref

    return model_ref(study.spec).hypermodel


def _claim_in_study(
    tx: StudyTransaction, load: Load, *, ticket: str, worker: str, gpu: str | None
) -> Claim | Wait | Done | Propose:
    study = tx.study
    if study.is_terminal or study.is_paused:
        return Done(f"study is {study.status}")
    if load.pending:
        pending = tx.next_pending()
        if pending is not None:
            return Claim(tx.restart_trial(pending.id, ticket=ticket, worker=worker, gpu=gpu), tx.study)
    total = load.total
    if total >= study.max_trials:
        return _maybe_complete(tx, "budget spent")
    if study.algorithm in proposals.MODEL_BASED:
        return _claim_proposal(tx, total, proposals.take(tx), ticket=ticket, worker=worker, gpu=gpu)
    if study.algorithm == "random":
        return _claim_proposal(tx, total, proposals.draw(tx, total), ticket=ticket, worker=worker, gpu=gpu)
    if study.algorithm == "asha":
        return _claim_asha(tx, total, load.running, ticket=ticket, worker=worker, gpu=gpu)
    if study.algorithm == "hyperband":
        return _claim_hyperband(tx, total, load.running, ticket=ticket, worker=worker, gpu=gpu)
    oracle = restore_oracle(tx)
    trial = oracle.create_trial(ticket)
    if trial.status == "IDLE":
        return Wait(WAIT_FOR_ROUND_S)
    if trial.status != "RUNNING":
        save_oracle(tx, oracle)
        return _maybe_complete(tx, "search space exhausted")
    record = tx.add_trial(
        number=total,
        oracle_trial_id=trial.trial_id,
        ticket=ticket,
        hyperparameters=dict(trial.hyperparameters.values),
        oracle_trial_state=trial_state(trial),
        worker=worker,
        gpu=gpu,
    )
    save_oracle(tx, oracle)
    if study.status == "queued":
        tx.set_status("running")
    return Claim(record, tx.study)


def _claim_asha(
    tx: StudyTransaction, number: int, running: int, *, ticket: str, worker: str, gpu: str | None
) -> Claim | Wait | Done | Propose:
    """ASHA: promote the best unpromoted trial of the top 1/η of the highest rung that has one (one query over
    the trial rows), else start a new configuration at the bottom rung."""
    study = tx.study
    rungs = Rungs.of(study.spec["algorithm"])
    promotion = tx.asha_promotion(len(rungs.epochs) - 1, rungs.reduction_factor)
    if promotion is not None:
        parent_id, parent_values, rung = promotion
        return _claim_proposal(
            tx, number, rungs.promoted(parent_values, rung, parent_id), ticket=ticket, worker=worker, gpu=gpu
        )
    # A new configuration: a model's proposal computed outside the locks (a ``sampler``), or a random draw.
    drawn = proposals.take(tx) if proposals.model_of(study) is not None else proposals.draw(tx, number)
    if drawn == proposals.EXHAUSTED and running:
        return Wait(WAIT_FOR_ROUND_S, (study.id,))  # no configuration left, but a running trial may earn a promotion
    if isinstance(drawn, dict):
        drawn = {**drawn, **rungs.budget(0)}
    return _claim_proposal(tx, number, drawn, ticket=ticket, worker=worker, gpu=gpu)


def _claim_hyperband(
    tx: StudyTransaction, number: int, running: int, *, ticket: str, worker: str, gpu: str | None
) -> Claim | Wait | Done | Propose:
    """Hyperband: the next slot of its open brackets, decided from its small state and the results of those
    brackets' trials (:mod:`tuner_service.hyperband`)."""
    study = tx.study
    hb = Hyperband.of(study.spec["algorithm"], study.oracle_state)
    trial_id = _trial_id(study, number)

    def results(oracle_ids: list[str]) -> dict[str, HyperbandResult]:
        # Only trials that finished with a score can be promoted: the others are left out of the read.
        return {
            oracle_id: HyperbandResult(True, key, values)
            for oracle_id, (key, values) in tx.ranked_results(oracle_ids).items()
        }

    values = hb.next(trial_id, results, lambda: proposals.draw(tx, number), running)
    tx.set_oracle_state({**proposals.own_state(tx.study.oracle_state), hyperband.STATE_KEY: hb.to_json()})
    if values == hyperband.WAIT:
        return Wait(WAIT_FOR_ROUND_S, (study.id,))
    if values == hyperband.STOPPED:
        return _maybe_complete(tx, "all brackets done")
    return _claim_proposal(tx, number, values, ticket=ticket, worker=worker, gpu=gpu, trial_id=trial_id)


def _claim_proposal(
    tx: StudyTransaction,
    number: int,
    values: dict[str, Any] | str,
    *,
    ticket: str,
    worker: str,
    gpu: str | None,
    trial_id: str | None = None,
) -> Claim | Done | Propose:
    """A new trial with ``values`` (a model's proposal or a random draw), or what to do when there are none."""
    if values == proposals.EXHAUSTED:
        return _maybe_complete(tx, "search space exhausted")
    if values == proposals.NOT_READY:
        return Propose(tx.study.id)
    assert isinstance(values, dict)
    record = tx.add_trial(
        number=number,
        oracle_trial_id=trial_id or _trial_id(tx.study, number),
        ticket=ticket,
        hyperparameters=values,
        oracle_trial_state=None,
        worker=worker,
        gpu=gpu,
    )
    if tx.study.status == "queued":
        tx.set_status("running")
    return Claim(record, tx.study)


def _trial_id(study: StudyRecord, number: int) -> str:
    """A new trial's id within the study (names its checkpoints): its number, zero-padded as Keras Tuner pads.
    A study that a Keras Tuner oracle began with warm-start seeds numbered its trials after the seeds, so the
    ids of the trials claimed since get a prefix that its oracle never gave."""
    padded = f"{number:0{len(str(study.max_trials))}d}"
    return f"n{padded}" if (study.oracle_state or {}).get(WARM_START_KEY) else padded


def _maybe_complete(tx: StudyTransaction, reason: str) -> Done:
    if tx.count("running", "pending") == 0:
        tx.set_status("completed")
        return Done(f"study completed: {reason}")
    return Done(f"no new trial: {reason}; others still running")


def _is_fresh(trial: TrialRecord, timeout_s: float) -> bool:
    from tuner_service.store.models import as_utc, utcnow

    return trial.heartbeat_at is not None and (utcnow() - as_utc(trial.heartbeat_at)).total_seconds() < timeout_s


def finish_trial(store: Store, study_id: int, trial_id: int, outcome: TrialOutcome) -> Finished:
    """Report a trial's result to the oracle and store it; idempotent if reported twice.

    On PostgreSQL, a scored result of a study that keeps no oracle is one statement without the study's lock
    (:meth:`~tuner_service.store.Store.report_unlocked`): claims then never wait for reports. Whatever needs the
    lock takes it: a failure (which may fail the study), a report that found the trial not running, an oracle's
    update, and completing a study whose budget is spent."""
    finished = _finish_unlocked(store, study_id, trial_id, outcome)
    if finished is not None:
        return finished
    return store.with_study_lock(study_id, lambda tx: _finish(tx, trial_id, outcome))


def _finish_unlocked(store: Store, study_id: int, trial_id: int, outcome: TrialOutcome) -> Finished | None:
    """:func:`finish_trial` without the study's lock where it may be, else None."""
    if outcome.status not in ("completed", "pruned"):
        return None
    facts = store.study_facts(study_id)
    if facts is None or facts.algorithm not in WITHOUT_ORACLE:
        return None
    score = _objective_score(outcome, facts.objective_name)
    if score is None:
        return None  # stored as failed, under the lock: consecutive failures fail the study
    reported = store.report_unlocked(
        study_id,
        trial_id,
        facts,
        status=outcome.status,
        score=float(score),
        best_epoch=outcome.best_epoch,
        metrics=outcome.metrics,
        model_path=outcome.model_path,
        environment=outcome.environment,
    )
    if reported is None:
        return None  # not running (reported twice, or cancelled): answered under the lock
    total, _, pending = reported.load
    if reported.study_status in TERMINAL_STUDY:
        return Finished(reported.trial, reported.study_status, more_work=False)
    if total >= reported.max_trials:
        # The budget is spent: the study is complete once nothing runs. Decided under the lock, reading anew after
        # this report's commit, so that of the last trials' reports, the one committed last sees all of them.
        status = store.with_study_lock(study_id, _complete_if_idle)
        return Finished(reported.trial, status, more_work=pending > 0 and status not in TERMINAL_STUDY)
    return Finished(reported.trial, reported.study_status, more_work=True)


def _complete_if_idle(tx: StudyTransaction) -> str:
    """The study's status, completed first if its budget is spent and no trial is running or pending."""
    total, running, pending = tx.load()
    if not tx.study.is_terminal and total >= tx.study.max_trials and running + pending == 0:
        tx.set_status("completed")
    return tx.study.status


def _objective_score(outcome: TrialOutcome, objective_name: str) -> float | None:
    """The outcome's score on the study's objective, or None if it has none or it is not finite."""
    score = (outcome.metrics or {}).get(objective_name)
    return score if score is not None and math.isfinite(score) else None


def _finish(tx: StudyTransaction, trial_id: int, outcome: TrialOutcome) -> Finished:
    if tx.study.algorithm in WITHOUT_ORACLE:
        return _finish_without_oracle(tx, trial_id, outcome)
    record = tx.trial(trial_id)
    if record.status != "running":
        return Finished(record, tx.study.status, more_work=False)
    oracle = restore_oracle(tx, with_metrics=record.oracle_trial_id)
    kt_trial = oracle.trials[record.oracle_trial_id]
    status = outcome.status
    if status in ("completed", "pruned") and outcome.metrics:
        oracle.update_trial(record.oracle_trial_id, outcome.metrics, step=outcome.best_epoch or 0)
    elif status in ("completed", "pruned"):
        status = "failed"
    kt_trial.status = ORACLE_STATUS_OF[status]
    kt_trial.message = outcome.error
    study_error = None
    try:
        oracle.end_trial(kt_trial)
    except RuntimeError as exc:  # Keras Tuner gives up after consecutive failures
        study_error = str(exc)
    score = kt_trial.score if status in ("completed", "pruned") else None
    if score is not None and not math.isfinite(score):
        status, score = "failed", None
    finished = tx.finish_trial(
        trial_id,
        status=status,
        score=score,
        best_epoch=outcome.best_epoch,
        metrics=outcome.metrics,
        oracle_trial_state=trial_state(kt_trial),
        error=outcome.error,
        model_path=outcome.model_path,
        environment=outcome.environment,
    )
    save_oracle(tx, oracle)
    return _after_finish(tx, finished, study_error)


MAX_CONSECUTIVE_FAILURES = 3  # as the Keras Tuner oracles are configured in make_oracle


def _finish_without_oracle(tx: StudyTransaction, trial_id: int, outcome: TrialOutcome) -> Finished:
    """Store the result of a study with no oracle (random search, model-based ones: their configurations are
    drawn from the trial rows), and fail the study after too many failures in a row, as the oracles do. A
    trial that is not running (reported twice) is left as it is."""
    status, score = outcome.status, None
    if status in ("completed", "pruned"):
        score = _objective_score(outcome, tx.study.objective_name)
        if score is None:
            status = "failed"
    stored = tx.finish_running_trial(
        trial_id,
        status=status,
        score=score,
        best_epoch=outcome.best_epoch,
        metrics=outcome.metrics,
        error=outcome.error,
        model_path=outcome.model_path,
        environment=outcome.environment,
    )
    if stored is None:
        return Finished(tx.trial(trial_id), tx.study.status, more_work=False)
    finished, load = stored
    study_error = None
    recent = tx.last_finished(MAX_CONSECUTIVE_FAILURES) if status == "failed" else []
    if len(recent) == MAX_CONSECUTIVE_FAILURES and all(t.status == "failed" for t in recent):
        study_error = (
            f"Number of consecutive failures exceeded the limit of {MAX_CONSECUTIVE_FAILURES}.\n{outcome.error or ''}"
        )
    return _after_finish(tx, finished, study_error, load)


def _after_finish(
    tx: StudyTransaction, finished: TrialRecord, study_error: str | None, load: Load | None = None
) -> Finished:
    study = tx.study
    if study_error is not None and not study.is_terminal:
        tx.set_status("failed", error=study_error)
    if tx.study.is_terminal:
        return Finished(finished, tx.study.status, more_work=False)
    # The load as the report's own statement found it, or one indexed query (under the study's lock either way).
    total, running, pending = load or tx.load()
    if total >= study.max_trials and running + pending == 0:
        tx.set_status("completed")
        return Finished(finished, "completed", more_work=False)
    return Finished(finished, tx.study.status, more_work=total < study.max_trials or pending > 0)
