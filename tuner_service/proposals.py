"""Model-based proposals (``bayesian``: a Gaussian process; ``tpe``: Optuna's TPE) computed outside every lock.

Fitting a model takes seconds, and the claim runs under the study's row lock, where every other worker that
serves the study waits. So the claim only *takes* a ready proposal: each
model-based study keeps a small buffer of proposals in its stored state (``oracle_state``). The worker that
finishes a trial computes the next proposal after it released every lock, from a snapshot of the trial
rows in which running and buffered configurations count as pending (a pessimistic constant liar for the
GP, Optuna's own constant liar for TPE), and commits it under the study lock after checking again that no
finished, running or buffered trial has the same configuration. A claim that finds the buffer empty
(the first proposals after the initial design, or a lost race) hands the study back to its worker as
:class:`Propose`: the worker computes one outside the locks the same way and claims again, or, while another
process fits the study's model, waits for that fit, which proposes for the waiting workers too
(:func:`tuner_service.search.claim_after_propose`).

The first ``initial_points`` trials are drawn at random inside the claim (O(ms)). Every random stream is
derived from the study's seed and a counter kept in the stored state, so a rebuilt proposer continues
instead of restarting and a study with a seed proposes the same sequence when run again by one worker.
Keras Tuner, NumPy and Optuna are imported only when a model is fitted, never by the API.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tuner_service import hyperband
from tuner_service.space import Parameter, SearchSpace

if TYPE_CHECKING:
    from tuner_service.store import Store, StudyRecord, StudyTransaction, TrialPoint

log = logging.getLogger(__name__)

MODEL_BASED = ("bayesian", "tpe")
# What take() answers when it has no values: compute a proposal first, or the space has none left.
NOT_READY = "not ready"
EXHAUSTED = "exhausted"
STATE_KEY = "proposer"
WARM_START_KEY = "warm_start_trials"
# Draws before a proposer gives up finding a configuration no trial has (then it reports none).
MAX_DRAWS = 100
# Fresh proposals tried when the model keeps proposing a configuration that is taken.
MODEL_ATTEMPTS = 3
# Random candidates scored by the GP's acquisition before the best few are refined by L-BFGS-B.
GP_CANDIDATES = 2000
GP_RESTARTS = 5


def model_of(study: StudyRecord) -> str | None:
    """The model fitted outside the locks for a study's new configurations: its own algorithm (``bayesian``,
    ``tpe``), or the ``sampler`` of an ``asha`` study; None when its configurations are drawn in the claim."""
    if study.algorithm in MODEL_BASED:
        return study.algorithm
    if study.algorithm == "asha":
        sampler = study.spec["algorithm"].get("sampler", "random")
        return sampler if sampler in MODEL_BASED else None
    return None


def default_initial_points(max_trials: int, parameters: int) -> int:
    """About a quarter of the budget, at least 2, at most 3 x the parameters (Keras Tuner's own default)."""
    return max(2, min(round(max_trials / 4), 3 * max(parameters, 1)))


def tuned(space: SearchSpace) -> list[Parameter]:
    """The parameters a proposer chooses (per-layer widths expanded), fixed ones included."""
    return list(space.expanded())


def is_active(p: Parameter, values: dict[str, Any]) -> bool:
    c = p.condition
    return c is None or (c.parent in values and any(_same(values[c.parent], v) for v in c.values))


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b or (_number(a) and _number(b) and a == b)


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def config_key(values: dict[str, Any]) -> str:
    """A configuration's identity: its values without the budget keys (``tuner/...``) of Hyperband/ASHA."""
    trimmed = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    return json.dumps(trimmed, sort_keys=True, default=str)


def config_hash(values: dict[str, Any]) -> str:
    """The digest of :func:`config_key` stored on every trial row (``trials.config_hash``, indexed per study)."""
    return hashlib.sha1(config_key(values).encode()).hexdigest()


def snap(p: Parameter, value: Any) -> Any:
    """``value`` moved to the nearest value ``p`` can take: inside [min, max] and on its step grid."""
    if p.type == "fixed":
        return p.value
    if p.type in ("choice", "boolean"):
        allowed = list(p.values) if p.type == "choice" else [True, False]
        for candidate in allowed:
            if _same(candidate, value):
                return candidate
        return p.effective_default()
    low, high = p.min, p.max
    v = min(max(float(value), float(low)), float(high))
    if p.step is not None and p.sampling == "linear":
        top = math.floor((high - low) / p.step + 1e-9)
        v = low + min(max(round((v - low) / p.step), 0), top) * p.step
    elif p.step is not None:  # log / reverse_log: the step is a multiplier (Keras Tuner's convention)
        top = int(math.log(high / low, p.step) + 1e-8)
        mirrored = v if p.sampling == "log" else high + low - v
        k = min(max(round(math.log(max(mirrored, low) / low, p.step)), 0), top)
        grid = low * math.pow(p.step, k)
        v = grid if p.sampling == "log" else high + low - grid
    if p.type == "int":
        return int(min(max(round(v), low), high)) if p.step is None or p.sampling == "linear" else int(v)
    return float(min(max(v, low), high))


def clamp(space: SearchSpace | list[Parameter], values: dict[str, Any]) -> dict[str, Any]:
    """Only the active parameters, each snapped into its range and step; missing active ones get defaults."""
    params = tuned(space) if isinstance(space, SearchSpace) else space
    out: dict[str, Any] = {}
    for p in params:
        if not is_active(p, out):
            continue
        out[p.name] = snap(p, values[p.name]) if p.name in values else p.effective_default()
    return out


def random_values(
    params: list[Parameter], rng: random.Random, design: tuple[int, int, int] | None = None
) -> dict[str, Any]:
    """One configuration drawn uniformly (log-uniformly for log sampling), conditions respected.

    ``design`` = (index, points, seed): the ``index``-th point of a Latin hypercube of ``points``. Each
    parameter's range is cut into ``points`` equal slices on its sampling scale, and each slice goes to
    exactly one point, in an order shuffled per parameter by ``seed``. A small initial design then covers
    every range, and every value of a choice with no more values than points, instead of clumping by
    chance: two random points are both ``sgd`` half the time, and a model fitted on those two never learns
    what ``adam`` does."""
    out: dict[str, Any] = {}
    for p in params:
        if not is_active(p, out):
            continue
        if p.type == "fixed":
            out[p.name] = p.value
            continue
        u = rng.random()
        if design is not None:
            index, points, seed = design
            piece = _latin_slice(seed, p.name, index, points)
            levels = _levels(p)
            if levels is not None and levels <= points:
                # No more values than points: the slices share the values out evenly, each value at least once.
                u = (piece * levels // points + 0.5) / levels
            else:
                u = (piece + u) / points
        out[p.name] = value_at(p, u)
    return out


def _latin_slice(seed: int, name: str, index: int, points: int) -> int:
    order = list(range(points))
    random.Random(f"{seed}:{name}:design").shuffle(order)
    return order[index % points]


def _levels(p: Parameter) -> int | None:
    """How many values the parameter has, where they are evenly spaced on its scale (else None)."""
    if p.type == "choice":
        return len(p.values)
    if p.type == "boolean":
        return 2
    if p.type == "int" and p.sampling == "linear":
        return int((p.max - p.min) // (p.step or 1)) + 1
    return None


def value_at(p: Parameter, u: float) -> Any:
    """The parameter's value at quantile ``u`` in [0, 1) of its sampling distribution."""
    if p.type == "choice":
        values = list(p.values)
        return values[min(int(u * len(values)), len(values) - 1)]
    if p.type == "boolean":
        return u >= 0.5
    if p.sampling == "linear":
        # Ints: uniform over the integers (or the step grid), max included.
        upper = p.max + (p.step or 1) * 0.999 if p.type == "int" else p.max
        return snap(p, _floor_to_grid(p, p.min + u * (upper - p.min)))
    drawn = math.exp(math.log(p.min) + u * (math.log(p.max) - math.log(p.min)))
    return snap(p, drawn if p.sampling == "log" else p.max + p.min - drawn)


def _floor_to_grid(p: Parameter, v: float) -> float:
    if p.type != "int":
        return v
    step = p.step or 1
    return p.min + math.floor((v - p.min) / step) * step


def fit_values(params: list[Parameter], values: dict[str, Any]) -> dict[str, Any] | None:
    """``values`` restricted to this space (defaults for what they lack), or None if one lies outside it."""
    fitted: dict[str, Any] = {}
    for p in params:
        if not is_active(p, fitted):
            continue
        if p.name not in values:
            fitted[p.name] = p.effective_default()
            continue
        value = values[p.name]
        if p.type in ("int", "float"):
            if not _number(value) or not p.min <= value <= p.max:
                return None
        elif snap(p, value) != value or type(snap(p, value)) is not type(value):
            return None
        fitted[p.name] = value
    return fitted


def rng_seed(seed: int, counter: int, attempt: int = 0) -> int:
    """A 32-bit seed for the ``counter``-th proposal of a study (stable across processes and restarts)."""
    return random.Random(f"{seed}:{counter}:{attempt}").getrandbits(32)


@dataclass
class ProposerState:
    """What a model-based study stores between claims: the RNG counter, the initial design, ready proposals."""

    initial_points: int
    counter: int = 0
    buffer: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[dict[str, Any]] = field(default_factory=list)  # warm start: {"values", "score"}
    exhausted: bool = False  # no configuration left that no trial has
    kernel_theta: list[float] | None = None  # the GP kernel's last fitted hyperparameters (log scale)

    def to_json(self) -> dict[str, Any]:
        state = {
            "initial_points": self.initial_points,
            "counter": self.counter,
            "proposals": self.buffer,
            "seeds": self.seeds,
            "exhausted": self.exhausted,
        }
        return state if self.kernel_theta is None else {**state, "kernel_theta": self.kernel_theta}

    @classmethod
    def of(cls, study: StudyRecord) -> ProposerState | None:
        stored = (study.oracle_state or {}).get(STATE_KEY)
        if stored is None:
            return None
        return cls(
            stored["initial_points"],
            stored["counter"],
            list(stored["proposals"]),
            list(stored["seeds"]),
            bool(stored.get("exhausted")),
            stored.get("kernel_theta"),
        )


def study_seed(study: StudyRecord) -> int:
    seed = study.spec.get("seed")
    return int(seed) if seed is not None else study.id


def space_of(study: StudyRecord) -> SearchSpace:
    from tuner_service.hypermodels.registry import model_ref

    mlp = model_ref(study.spec).is_builtin_mlp
    return SearchSpace.from_json(study.spec["search_space"], max_parameters=10_000, mlp_domains=mlp)


def initial_points_of(study: StudyRecord) -> int:
    options = study.spec["algorithm"]
    given = options.get("initial_points", options.get("num_initial_points"))
    if given is not None:
        return int(given)
    space = space_of(study)
    return default_initial_points(study.max_trials, sum(p.type != "fixed" for p in tuned(space)))


# -- inside the claim (study lock held): O(ms) ----------------------------------------------------------


def take(tx: StudyTransaction) -> dict[str, Any] | str:
    """The values of the study's next trial if one is ready (buffered or initial design), else
    :data:`NOT_READY` or :data:`EXHAUSTED`. Called under the study lock; never fits a model."""
    study = tx.study
    state = ProposerState.of(study) or _first_state(tx)
    values: dict[str, Any] | str = NOT_READY
    if state.buffer:
        values = state.buffer.pop(0)
    elif state.exhausted:
        values = EXHAUSTED
    elif tx.load().total + len(state.seeds) < state.initial_points or (
        study.algorithm == "asha" and len(state.seeds) < state.initial_points
    ):  # warm-start seeds count as initial points; ASHA's promotions do not (they repeat a configuration)
        trials = tx.trials()
        configurations = {config_key(t.hyperparameters) for t in trials}
        if len(configurations) + len(state.seeds) < state.initial_points:
            design = (len(configurations), state.initial_points - len(state.seeds), study_seed(study))
            drawn = _draw_random(tuned(space_of(study)), study_seed(study), state, configurations, design)
            state.exhausted = drawn is None
            values = EXHAUSTED if drawn is None else drawn
    if state.to_json() != (study.oracle_state or {}).get(STATE_KEY):  # a claim that finds none writes nothing
        _save(tx, state)
    return values


def _first_state(tx: StudyTransaction) -> ProposerState:
    study = tx.study
    params = tuned(space_of(study))
    seeds = []
    study_ids = study.spec.get("warm_start", {}).get("studies", [])
    for record in tx.finished_trials(study_ids) if study_ids else []:
        fitted = fit_values(params, record.hyperparameters)
        if fitted is not None and record.score is not None and math.isfinite(record.score):
            seeds.append({"values": fitted, "score": record.score})
    return ProposerState(initial_points_of(study), seeds=seeds)


def _draw_random(
    params: list[Parameter], seed: int, state: ProposerState, taken: set[str], design: tuple[int, int, int] | None
) -> dict[str, Any] | None:
    """An initial-design point no trial has taken: its slices stay fixed while the draws inside them retry."""
    for _ in range(MAX_DRAWS):
        values = random_values(params, random.Random(rng_seed(seed, state.counter)), design)
        state.counter += 1
        if config_key(values) not in taken:
            return values
    return None


def _save(tx: StudyTransaction, state: ProposerState) -> None:
    tx.set_oracle_state({**(tx.study.oracle_state or {}), STATE_KEY: state.to_json()})


# -- random search: drawn inside the claim, no oracle ----------------------------------------------------------

RANDOM_KEY = "random"
# What the oracle-free algorithms keep in a study's ``oracle_state``; anything else is a Keras Tuner oracle's
# state stored before (Hyperband reads it once), dropped on the next write.
OWN_KEYS = frozenset({RANDOM_KEY, STATE_KEY, WARM_START_KEY, hyperband.STATE_KEY})


def own_state(state: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (state or {}).items() if k in OWN_KEYS}


# Configurations drawn per lookup of which are taken (one indexed query per batch, MAX_DRAWS in all); the first
# lookup has fewer, since in a space far larger than the study its first draw is almost always free.
FIRST_DRAWS = 2
DRAW_BATCH = 8
_DRAW_BOUNDS = [0, *range(FIRST_DRAWS, MAX_DRAWS, DRAW_BATCH), MAX_DRAWS]


def draw(tx: StudyTransaction, number: int) -> dict[str, Any] | str:
    """The configuration of a ``random`` study's trial ``number`` (also Hyperband's and ASHA's new ones): a draw
    that no trial of the study has, or :data:`EXHAUSTED`.

    Called under the study lock; costs the same however many trials the study has, and writes nothing in the
    common case. Trial ``number``'s candidates come from ``rng_seed(seed, number, k)`` for k = 0, 1, ... (trial
    numbers are unique and given in order, so a seeded study run by one worker proposes the same sequence again,
    and two claims never draw from the same stream), and whether a candidate is taken is one indexed lookup of
    its digest (``trials.config_hash``) per batch, not a read of every trial. In a claim's optimistic
    transaction the first candidate is not looked up: the trial's insert checks it in the same statement
    (:meth:`~tuner_service.store.StudyTransaction.expect_free`), and in the rare case it is taken the claim
    is made again with lookups. The stored state is written only
    to keep a warm start's known digests and to mark the space exhausted.
    """
    study = tx.study
    stored = (study.oracle_state or {}).get(RANDOM_KEY)
    if stored is None:
        stored = {"avoid": _warm_start_digests(tx), "exhausted": False}
        if stored["avoid"]:
            tx.set_oracle_state({**own_state(study.oracle_state), RANDOM_KEY: stored})
    if stored["exhausted"]:
        return EXHAUSTED
    params = _params(json.dumps(study.spec["search_space"]), _is_mlp(study))
    seed, avoid = study_seed(study), set(stored["avoid"])
    for first, end in itertools.pairwise(_DRAW_BOUNDS):
        batch = [random_values(params, random.Random(rng_seed(seed, number, k))) for k in range(first, end)]
        digests = [config_hash(values) for values in batch]
        if first == 0 and tx.optimistic and digests[0] not in avoid:
            tx.expect_free(digests[0])  # the trial's insert checks it (a claim repeats itself if it is taken)
            return batch[0]
        taken = tx.taken_configurations(digests) | avoid
        for values, digest in zip(batch, digests, strict=True):
            if digest not in taken:
                return values
    tx.set_oracle_state({**own_state(tx.study.oracle_state), RANDOM_KEY: {**stored, "exhausted": True}})
    return EXHAUSTED


def _warm_start_digests(tx: StudyTransaction) -> list[str]:
    """The configurations of the warm-start studies' finished trials, fitted to this space: known already,
    so random search does not train them again."""
    study = tx.study
    study_ids = study.spec.get("warm_start", {}).get("studies", [])
    if not study_ids:
        return []
    params = tuned(space_of(study))
    fitted = (fit_values(params, record.hyperparameters) for record in tx.finished_trials(study_ids))
    return sorted({config_hash(values) for values in fitted if values is not None})


def _is_mlp(study: StudyRecord) -> bool:
    from tuner_service.hypermodels.registry import model_ref

    return model_ref(study.spec).is_builtin_mlp


@functools.lru_cache(maxsize=256)
def _params(space_json: str, mlp_domains: bool) -> list[Parameter]:
    """The tuned parameters of a stored space, parsed once per process (every random claim needs them)."""
    return tuned(SearchSpace.from_json(json.loads(space_json), max_parameters=10_000, mlp_domains=mlp_domains))


# -- outside every lock: the model --------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """A snapshot of a study for a proposer: finished scores, and what is running or buffered (pending)."""

    space: SearchSpace
    direction: str
    completed: list[tuple[dict[str, Any], float]]
    pending: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    initial_points: int
    options: dict[str, Any]

    @classmethod
    def of(cls, study: StudyRecord, trials: Iterable[TrialPoint], state: ProposerState) -> History:
        space = space_of(study)
        params = tuned(space)
        completed = [(s["values"], float(s["score"])) for s in state.seeds]
        pending = [clamp(params, v) for v in state.buffer]
        failed = []
        for t in _latest_per_configuration(trials) if study.algorithm == "asha" else trials:
            values = clamp(params, t.hyperparameters)
            if t.status in ("completed", "pruned") and t.score is not None and math.isfinite(t.score):
                completed.append((values, float(t.score)))
            elif t.status in ("running", "pending"):
                pending.append(values)
            else:
                failed.append(values)
        options = {k: v for k, v in study.spec["algorithm"].items() if k != "name"}
        return cls(space, study.direction, completed, pending, failed, state.initial_points, options)

    @property
    def params(self) -> list[Parameter]:
        return tuned(self.space)

    def taken(self) -> set[str]:
        return {config_key(v) for v in [*(c for c, _ in self.completed), *self.pending, *self.failed]}


def _latest_per_configuration(trials: Iterable[TrialPoint]) -> list[TrialPoint]:
    """ASHA's trials, one per configuration: the one at its highest rung (a promotion repeats its parent's
    configuration and trains it further, so the parent's score is superseded)."""
    latest: dict[str, TrialPoint] = {}
    for t in trials:
        key, rung = config_key(t.hyperparameters), t.hyperparameters.get("tuner/rung", 0)
        if key not in latest or rung >= latest[key].hyperparameters.get("tuner/rung", 0):
            latest[key] = t
    return list(latest.values())


def propose(algorithm: str, history: History, seed: int, fitted: dict[str, Any] | None = None) -> dict[str, Any]:
    """One configuration from the study's model, clamped to the space (may repeat a taken one). ``fitted``: the
    GP's kernel is kept there, and a kernel found there is used as it is (the proposals of one batch)."""
    with warnings.catch_warnings():
        # sklearn's kernel-bound and Optuna's experimental-feature warnings say nothing a user can act on.
        warnings.simplefilter("ignore")
        if algorithm == "tpe":
            values = propose_tpe(history, seed)
        elif history.completed:
            values = propose_gp(history, seed, fitted)
        else:  # nothing finished yet: a model has nothing to learn from
            values = random_values(history.params, random.Random(seed))
    return clamp(history.params, values)


def compute_proposal(store: Store, study_id: int, *, delay_s: float = 0.0) -> bool:
    """Compute a proposal for the study without holding any lock and add it to the study's buffer, unless
    another process is fitting the study's model right now (its proposal comes first, and a second fit on the
    same results would mostly propose what the first one does); whether a proposal was added (also False when
    the study no longer needs one or none is left). ``delay_s`` lengthens the model step (the
    ``TUNER_PROPOSAL_DELAY`` setting: tests and benchmarks use it to show that a slow model holds up no claim).
    A worker whose claim needs the proposal uses :func:`tuner_service.search.claim_after_propose` instead."""
    with store.proposal_lease(study_id) as lease:
        return lease is not None and fit_proposals(store, study_id, delay_s)


def fit_proposals(store: Store, study_id: int, delay_s: float = 0.0) -> bool:
    """:func:`compute_proposal`'s work, for a process that holds the study's :meth:`~Store.proposal_lease`:
    one proposal, and one more for each process waiting for the lease (each of them needs one)."""
    prepared = in_fit_thread(_prepare, store, study_id)
    if prepared is None:
        return False
    study, history, state, room = prepared
    counter = state.counter
    seed = study_seed(study)
    if delay_s > 0:
        time.sleep(delay_s)
    model = model_of(study) or study.algorithm
    fitted: dict[str, Any] = {"theta": state.kernel_theta}  # the GP starts from its last fit's kernel
    values = None
    taken = history.taken()
    for attempt in range(MODEL_ATTEMPTS):
        try:
            candidate = in_fit_thread(propose, model, history, rng_seed(seed, counter, attempt + 1), fitted)
        except Exception:  # a model that fails (singular fit, odd data) must not stop the study
            log.exception("study %s: the %s model failed; proposing at random instead", study_id, study.algorithm)
            break
        if config_key(candidate) not in taken:
            values = candidate
            break
    if values is None:  # the model insists on taken points: explore at random instead
        values = _draw_random(history.params, seed, ProposerState(0, counter + 1), taken, None)
    if values is None:  # no configuration is left
        return store.with_study_lock(study_id, lambda tx: _commit(tx, None))
    theta = fitted.get("theta")
    batch = [values]
    waiting = min(store.proposal_waiters(study_id), room - 1, MAX_BATCH - 1)
    if waiting > 0:
        try:
            seeds = [rng_seed(seed, counter + k, 1) for k in range(1, 1 + waiting)]
            batch += in_fit_thread(_propose_more, model, history, taken, seeds, values, fitted)
        except Exception:  # the first proposal stands; the waiting workers fit their own
            log.exception("study %s: the %s model failed on a batch", study_id, study.algorithm)
    return store.with_study_lock(study_id, lambda tx: _commit(tx, batch, theta))


# At most this many proposals from one fit: one for the process that fits, one more for each process that waits
# for its lease (:meth:`Store.proposal_waiters`), so that a fit's end wakes no worker that then finds none.
MAX_BATCH = 16


def _propose_more(
    model: str,
    history: History,
    taken: set[str],
    seeds: list[int],
    first: dict[str, Any],
    fitted: dict[str, Any],
) -> list[dict[str, Any]]:
    """More proposals after ``first``, each counting the ones before it as running (the constant liar keeps
    them apart), from the model fitted for ``first`` (the GP's kernel is not fitted again); a proposal that
    repeats a ``taken`` configuration (the history's) or one of the batch is left out."""
    batch = [first]
    taken = taken | {config_key(first)}
    for seed in seeds:
        values = propose(model, dataclasses.replace(history, pending=[*history.pending, *batch]), seed, fitted)
        if config_key(values) not in taken:
            taken.add(config_key(values))
            batch.append(values)
    return batch[1:]


def _prepare(store: Store, study_id: int) -> tuple[StudyRecord, History, ProposerState, int] | None:
    """The study, the history its model learns from, its proposer state and how many proposals it can take now;
    None if it needs none. Runs in the fit thread too: reading and decoding every trial is most of a TPE
    proposal's cost."""
    study, trials = store.study_snapshot(study_id)
    state = ProposerState.of(study)
    room = _room(study, len(trials), state)
    if room == 0:
        return None
    assert state is not None
    return study, History.of(study, trials, state), state, room


# Model fits run in one thread per process kept for them, this much nicer than the process (Linux; a no-op
# elsewhere): on a host that also runs the database, the API or other workers, as a small team's single host
# does, a GP or TPE fit takes the CPU only when claims, reports and training leave it idle.
FIT_NICENESS = 10
_fit_thread: tuple[int, ThreadPoolExecutor] | None = None


def in_fit_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` run in this process's fit thread (at a lower CPU priority); its result or its exception."""
    global _fit_thread
    if _fit_thread is None or _fit_thread[0] != os.getpid():  # a forked child gets a thread of its own
        executor = ThreadPoolExecutor(1, thread_name_prefix="proposal-fit", initializer=_lower_priority)
        _fit_thread = (os.getpid(), executor)
    return _fit_thread[1].submit(_single_threaded, fn, *args).result()


def _single_threaded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with BLAS's own thread pool cut to this thread: its pool threads would run the fit's linear
    algebra at the process's priority instead of the fit thread's (training, which does not use BLAS's pool,
    never runs while its process fits a model)."""
    with _thread_pools().limit(limits=1, user_api="blas"):
        return fn(*args)


@functools.cache
def _thread_pools() -> Any:
    """The process's native thread pools, found once (after importing the libraries a fit loads)."""
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    import sklearn.gaussian_process  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _lower_priority() -> None:
    try:  # on Linux a thread's niceness is its own (setpriority on its thread id)
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + FIT_NICENESS))
    except (AttributeError, OSError):  # no per-thread priorities here: the fit runs at the process's
        pass


def _room(study: StudyRecord, trials: int, state: ProposerState | None) -> int:
    """How many more proposals the study's buffer takes: no more than its budget still owes, nor than its
    parallelism."""
    if study.is_terminal or model_of(study) is None or state is None:
        return 0
    owed = study.max_trials - trials - len(state.buffer)
    return max(0, min(owed, study.parallelism - len(state.buffer)))


def _commit(tx: StudyTransaction, batch: list[dict[str, Any]] | None, theta: list[float] | None = None) -> bool:
    """Add the proposals to the buffer, leaving out any that a trial or a buffered proposal took meanwhile
    (None: no configuration is left, so the study's claims end it), and keep the GP kernel's fitted ``theta``
    for the next fit to start from; whether a proposal was added. Under the study's lock: the trials are looked
    up by the configurations' digests, not read."""
    study = tx.study
    state = ProposerState.of(study)
    room = _room(study, tx.load().total, state)
    if room == 0:
        return False
    assert state is not None
    if batch is None:
        state.exhausted = True
        _save(tx, state)
        return False
    digests = [config_hash(values) for values in batch]
    taken = tx.taken_configurations(digests)
    buffered = {config_key(v) for v in state.buffer}
    added = 0
    for values, digest in zip(batch, digests, strict=True):
        if added == room:
            break
        key = config_key(values)
        if digest in taken or key in buffered:
            continue
        buffered.add(key)
        state.buffer.append(values)
        state.counter += 1
        added += 1
    refitted = theta is not None and theta != state.kernel_theta
    if refitted:
        state.kernel_theta = theta
    if added or refitted:
        _save(tx, state)
    return added > 0


def refill(store: Store, study_id: int, *, delay_s: float = 0.0) -> bool:
    """After a trial finished (locks released): prepare the proposal its successor will take."""
    return compute_proposal(store, study_id, delay_s=delay_s)


# -- Gaussian process (Keras Tuner's oracle as the model) -----------------------------------------------


def _minimized(history: History, score: float) -> float:
    return -score if history.direction == "max" else score


def propose_gp(history: History, seed: int, fitted: dict[str, Any] | None = None) -> dict[str, Any]:
    """GP-UCB with Keras Tuner's Bayesian oracle; running and buffered trials get the worst score seen
    (a pessimistic constant liar) so that parallel workers are sent elsewhere. ``fitted``: where the fitted
    kernel is kept; a kernel already there is used as it is, without fitting its hyperparameters again, and a
    ``theta`` there (the study's last fitted hyperparameters) is where their fit starts (see
    :data:`GP_WARM_RESTARTS`)."""
    import numpy as np
    import scipy.optimize

    oracle = _gp_oracle(history, seed)
    x, y = _observations(history, oracle._nonfixed_space())
    x = np.nan_to_num(x, posinf=0, neginf=0)
    y = np.nan_to_num(y, posinf=0, neginf=0)
    if fitted is not None and "kernel" in fitted:
        oracle.gpr.set_params(kernel=fitted["kernel"], optimizer=None)
    elif fitted is not None and fitted.get("theta") is not None:
        kernel = oracle.gpr.kernel
        theta = np.asarray(fitted["theta"], dtype=float)
        if theta.shape == kernel.theta.shape:
            theta = np.clip(theta, kernel.bounds[:, 0], kernel.bounds[:, 1])
            oracle.gpr.set_params(kernel=kernel.clone_with_theta(theta), n_restarts_optimizer=GP_WARM_RESTARTS)
    oracle.gpr.fit(x, y)
    if fitted is not None:
        fitted["kernel"] = oracle.gpr.kernel_
        fitted["theta"] = [float(v) for v in oracle.gpr.kernel_.theta]
    beta = oracle.beta
    bounds = oracle._get_hp_bounds().astype(float)
    rng = np.random.RandomState(seed)

    def acquisition(points: Any) -> Any:
        mu, sigma = oracle.gpr.predict(np.atleast_2d(points), return_std=True)
        return mu - beta * sigma

    def with_gradient(point: Any) -> tuple[float, Any]:
        """The acquisition and its forward-difference gradient (SciPy's default steps, turned back at the upper
        bounds) from one prediction of all the points: the GP's overhead per call dominates a single point's."""
        step = _FD_STEP * np.maximum(1.0, np.abs(point))
        step = np.where(point + step > bounds[:, 1], -step, step)
        values = acquisition(np.vstack([point, point + np.diag(step)]))
        return float(values[0]), (values[1:] - values[0]) / step

    # Score many random points at once (one vectorised predict), then refine the best few.
    candidates = rng.uniform(bounds[:, 0], bounds[:, 1], size=(GP_CANDIDATES, bounds.shape[0]))
    scores = acquisition(candidates)
    best_x, best_val = candidates[int(np.argmin(scores))], float(np.min(scores))
    for start in candidates[np.argsort(scores)[:GP_RESTARTS]]:
        result = scipy.optimize.minimize(with_gradient, x0=start, jac=True, bounds=bounds, method="L-BFGS-B")
        if float(np.atleast_1d(result.fun)[0]) < best_val:
            best_x, best_val = result.x, float(np.atleast_1d(result.fun)[0])
    return dict(oracle._vector_to_values(np.clip(best_x, 0.0, 1.0)))


_FD_STEP = 1.4901161193847656e-08  # the square root of float64's epsilon: SciPy's relative step


def _gp_oracle(history: History, seed: int) -> Any:
    """Keras Tuner's Bayesian oracle for the space, used for its GP (Keras Tuner's Matern kernel, its length
    scales floored: :data:`GP_LENGTH_SCALE_FLOOR`), bounds and vector encoding (no trials)."""
    import keras_tuner as kt
    import numpy as np
    from sklearn.gaussian_process.kernels import Matern

    hyperparameters = kt.HyperParameters.from_config(history.space.to_keras_tuner_config())
    options = {k: history.options[k] for k in ("alpha", "beta") if k in history.options}
    oracle = kt.oracles.BayesianOptimizationOracle(
        objective=kt.Objective("score", direction="min"),
        hyperparameters=hyperparameters,
        num_initial_points=1,
        seed=seed % (2**31),
        **options,
    )
    oracle._random_state = np.random.RandomState(seed)
    oracle.gpr.set_params(kernel=Matern(nu=2.5, length_scale_bounds=(GP_LENGTH_SCALE_FLOOR, 1e5)))
    return oracle


# The shortest length scale the GP may fit, on the [0, 1] scale of every parameter. With the few results of a
# small budget (2 or 3 at the first proposal), an unbounded fit chose length scales so short that the GP's mean
# was flat away from the data; its confidence bound then pointed at the box's corners (a digits run proposed the
# lowest learning rates four times in six). The floor keeps the fitted surface smooth enough to steer by.
# Measured on the quality benchmark's 5 tasks x 5 seeds: digits 0.9132 -> 0.9674, synthetic_20k 0.7971 ->
# 0.8231, wine 0.8966 -> 0.9517 (mean best validation), breast_cancer 0.9714 -> 0.9648, diabetes 51.90 -> 51.67.
GP_LENGTH_SCALE_FLOOR = 0.3
# Random restarts of the kernel's hyperparameter fit when it starts from the study's last fit (Keras Tuner's
# oracle makes 20 from scratch). The kernel has one length scale, and one result more moves its optimum little:
# over a 120-trial study (bench space, synthetic scores) the warm start with one restart reached the same
# log marginal likelihood as 20 restarts in all 104 fits (length scale equal to 1e-7), at 14 ms instead of 158 ms.
GP_WARM_RESTARTS = 1


def _observations(history: History, nonfixed: list[Any]) -> tuple[Any, Any]:
    """What the oracle's ``_vectorize_trials`` makes of the history (each value as its quantile on the
    parameter's scale, an inactive one's default; scores minimized; running and buffered trials scored with
    the worst score seen), without building a Keras Tuner trial for each (most of the time it took)."""
    import numpy as np

    real = [_minimized(history, score) for _, score in history.completed]
    lie = max(real)  # the worst score seen, minimized
    points = [values for values, _ in history.completed] + list(history.pending)
    x = [[hp.value_to_prob(values.get(hp.name, hp.default)) for hp in nonfixed] for values in points]
    return np.array(x, dtype=float), np.array(real + [lie] * len(history.pending), dtype=float)


# -- TPE (Optuna) ---------------------------------------------------------------------------------------


def tpe_study(history: History, seed: int) -> tuple[Any, dict[str, Any]]:
    """An in-memory Optuna study holding the history (running and buffered trials as RUNNING, so the
    sampler's constant liar applies) and a multivariate, group-aware TPE sampler seeded for this proposal."""
    import optuna
    from optuna.trial import FrozenTrial, TrialState

    class OwnedTrial(FrozenTrial):
        """A trial made for this throwaway study alone: the storage may keep it instead of a deep copy
        (copying is what made a rebuild of 1,000 trials cost ~150 ms)."""

        def __deepcopy__(self, memo: dict[int, Any]) -> OwnedTrial:
            return self

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {p.name: _distribution(p) for p in history.params if p.type != "fixed"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ``group`` is marked experimental
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=history.initial_points, multivariate=True, group=True, constant_liar=True
        )
    study = optuna.create_study(direction="maximize" if history.direction == "max" else "minimize", sampler=sampler)
    now = datetime.now()

    def owned(values: dict[str, Any], state: Any, value: float | None = None) -> OwnedTrial:
        params = {k: _to_optuna(distributions[k], v) for k, v in values.items() if k in distributions}
        return OwnedTrial(
            number=-1,
            state=state,
            value=value,
            datetime_start=now,
            datetime_complete=None if state == TrialState.RUNNING else now,
            params=params,
            distributions={k: distributions[k] for k in params},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
            trial_id=-1,
        )

    trials = [owned(v, TrialState.COMPLETE, s) for v, s in history.completed]
    trials += [owned(v, TrialState.RUNNING) for v in history.pending]
    trials += [owned(v, TrialState.FAIL) for v in history.failed]
    study.add_trials(trials)
    return study, distributions


def propose_tpe(history: History, seed: int) -> dict[str, Any]:
    study, distributions = tpe_study(history, seed)
    trial = study.ask()
    values: dict[str, Any] = {}
    for p in history.params:
        if not is_active(p, values):
            continue
        if p.type == "fixed":
            values[p.name] = p.value
        else:
            values[p.name] = _suggest(trial, p.name, distributions[p.name])
    return values


def _distribution(p: Parameter) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.type == "choice":
        return CategoricalDistribution(list(p.values))
    if p.type == "boolean":
        return CategoricalDistribution([False, True])
    if p.step is not None and p.sampling != "linear":
        # A multiplicative grid (Keras Tuner's log step): its few values as an ordered choice.
        grid, value = [], p.min
        while value <= p.max * (1 + 1e-9):
            grid.append(snap(p, value if p.sampling == "log" else p.max + p.min - value))
            value *= p.step
        return CategoricalDistribution(sorted(set(grid)))
    log = p.sampling == "log"
    if p.type == "int":
        return IntDistribution(int(p.min), int(p.max), log=log, step=1 if log else int(p.step or 1))
    return FloatDistribution(float(p.min), float(p.max), log=log, step=None if log else p.step)


def _to_optuna(distribution: Any, value: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(distribution, FloatDistribution):
        return float(value)
    if isinstance(distribution, CategoricalDistribution):
        for choice in distribution.choices:
            if _same(choice, value):
                return choice
    return value


def _suggest(trial: Any, name: str, distribution: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    low, high, step, log = distribution.low, distribution.high, distribution.step, distribution.log
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, low, high, step=step, log=log)
    return trial.suggest_float(name, low, high, step=step, log=log)
