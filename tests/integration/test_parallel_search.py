"""Model-based search with several workers on PostgreSQL (and Redis): no repeated configuration, values in
range, the budget exact, and a slow model that holds up no other study's claim."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from tests.conftest import digits_study, wait_for_study
from tuner_service import proposals
from tuner_service.config import load_settings
from tuner_service.proposals import config_key
from tuner_service.search import (
    Claim,
    TrialOutcome,
    claim_after_propose,
    claim_next,
    claim_once,
    claim_through_proposals,
    finish_trial,
)
from tuner_service.space import SearchSpace
from tuner_service.store import Store
from tuner_service.store.store import LEASE_AFTER_FIT, LEASE_FREE, StaleLoad
from tuner_service.study import submit_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPACE = {
    "hidden_layers": {"type": "int", "min": 0, "max": 1},
    "neurons": {"type": "int", "min": 16, "max": 256, "sampling": "log"},
    "learning_rate": {"type": "float", "min": 1e-3, "max": 3e-2, "sampling": "log"},
    "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
    "momentum": {"type": "float", "min": 0.0, "max": 0.9, "condition": {"parent": "optimizer", "values": ["sgd"]}},
}


def test_three_workers_run_bayesian_and_tpe_studies_without_repeating_a_configuration(team, workers) -> None:
    settings, store, client = team
    pool = workers(settings)
    pool.start(3)
    ids = []
    for algorithm in ("bayesian", "tpe"):
        doc = digits_study(
            name=f"parallel-{algorithm}",
            algorithm=algorithm,
            search_space=SPACE,
            max_trials=12,
            parallelism=3,
            early_stopping={"patience": 1, "max_epochs": 1},
        )
        response = client.post("/api/v1/studies", json=doc)
        assert response.status_code == 201, response.json
        ids.append(response.json["id"])
    params = proposals.tuned(SearchSpace.from_json(SPACE))
    for study_id in ids:
        study = wait_for_study(store, study_id, timeout_s=420, logs=pool.logs)
        assert study.status == "completed", study.error
        trials = store.list_trials(study_id, sort="number", limit=100).items
        assert [t.number for t in trials] == list(range(12)), "the budget is exact"
        assert all(t.status == "completed" for t in trials)
        keys = [proposals.config_key(t.hyperparameters) for t in trials]
        assert len(set(keys)) == 12, f"{study.algorithm}: a configuration was trained twice"
        for t in trials:
            assert proposals.clamp(params, t.hyperparameters) == t.hyperparameters, t.hyperparameters
            assert 16 <= t.hyperparameters.get("neurons", 16) <= 256
            assert 1e-3 <= t.hyperparameters["learning_rate"] <= 3e-2
        assert len({t.worker for t in trials}) >= 2, "several workers should have shared the study"
        state = study.oracle_state["proposer"]
        assert state["initial_points"] == 3 and state["proposals"] == []


def test_a_slow_model_proposal_holds_up_no_claim_for_another_study(tmp_path, postgres_url) -> None:
    import keras_tuner  # noqa: F401 - a worker has imported it before it claims (tasks.py imports training)

    settings = load_settings({"TUNER_HOME": str(tmp_path / "home"), "TUNER_DATABASE_URL": postgres_url})
    store = Store(postgres_url)
    proposer_store = Store(postgres_url)  # the proposing worker's own connections, as in its own process
    store.upgrade()
    try:
        space = {"learning_rate": SPACE["learning_rate"], "optimizer": SPACE["optimizer"]}
        doc = digits_study(name="slow", algorithm={"name": "bayesian", "initial_points": 1}, search_space=space)
        slow = submit_study(store, settings, doc, lambda pool, n: None)
        first = claim_next(store, "cpu", ticket=uuid.uuid4().hex, worker="a", heartbeat_timeout_s=60)
        assert isinstance(first, Claim) and first.study.id == slow.id
        finish_trial(store, slow.id, first.trial.id, TrialOutcome("completed", {"val_accuracy": 0.5}, 0))

        # Worker "a" claims next: the study needs a GP proposal, which this worker now computes (slowly).
        in_claim = threading.Event()
        proposer_store.on_lock_wait = lambda _seconds: in_claim.set()
        answer: dict[str, object] = {}

        def slow_worker() -> None:
            answer["claim"] = claim_next(
                proposer_store, "cpu", ticket=uuid.uuid4().hex, worker="a", heartbeat_timeout_s=60, proposal_delay_s=10
            )

        thread = threading.Thread(target=slow_worker)
        thread.start()
        assert in_claim.wait(30)
        other = submit_study(store, settings, digits_study(name="other", priority="high"), lambda pool, n: None)
        started = time.perf_counter()
        claimed = claim_once(store, "cpu", ticket=uuid.uuid4().hex, worker="b", heartbeat_timeout_s=60)
        elapsed = time.perf_counter() - started
        assert isinstance(claimed, Claim) and claimed.study.id == other.id
        assert thread.is_alive(), f"the other study's claim waited for the model proposal ({elapsed:.1f} s)"
        assert store.trial_counts(slow.id) == {"completed": 1}
        print(f"claim for another study during a 10 s proposal: {elapsed * 1000:.1f} ms")
        thread.join(60)
        slow_claim = answer["claim"]
        assert isinstance(slow_claim, Claim) and slow_claim.study.id == slow.id and slow_claim.trial.number == 1
    finally:
        store.dispose()
        proposer_store.dispose()


def tpe_study_past_its_first_trial(store: Store, settings: object, *, max_trials: int, parallelism: int) -> tuple:
    """A TPE study of two parameters whose one initial trial finished: its next claim needs a model's proposal.
    Returns the study and that first claim."""
    space = {"learning_rate": SPACE["learning_rate"], "optimizer": SPACE["optimizer"]}
    doc = digits_study(
        algorithm={"name": "tpe", "initial_points": 1}, search_space=space, max_trials=max_trials,
        parallelism=parallelism,
    )  # fmt: skip
    study = submit_study(store, settings, doc, lambda pool, n: None)
    claimed = claim_next(store, "cpu", ticket=uuid.uuid4().hex, worker="first", heartbeat_timeout_s=60)
    finish_trial(store, study.id, claimed.trial.id, TrialOutcome("completed", {"val_accuracy": 0.5}, 0))
    return study, claimed


def test_one_process_at_a_time_fits_a_studys_model(tmp_path, postgres_url) -> None:
    """While one worker fits a study's model, another that would fit the same results returns at once, or waits
    for that fit when told to (its claim needs the proposal), and the fit proposes for it too; a worker that died
    while fitting releases the study."""
    settings = load_settings({"TUNER_HOME": str(tmp_path / "home"), "TUNER_DATABASE_URL": postgres_url})
    first_store, second_store = Store(postgres_url), Store(postgres_url)  # two worker processes' connections
    first_store.upgrade()
    try:
        study, _ = tpe_study_past_its_first_trial(first_store, settings, max_trials=6, parallelism=4)
        added: dict[str, bool] = {}
        fitting = threading.Thread(
            target=lambda: added.update(first=proposals.compute_proposal(first_store, study.id, delay_s=3.0))
        )
        fitting.start()
        time.sleep(1.0)  # the first worker holds the study's lease and fits
        started = time.perf_counter()
        assert proposals.compute_proposal(second_store, study.id) is False
        assert time.perf_counter() - started < 1.0

        def buffered() -> int:
            return len(second_store.get_study(study.id).oracle_state["proposer"]["proposals"])

        # A worker whose claim needs that proposal waits for the fit's lease instead of polling (at most as long as
        # told),
        started = time.perf_counter()
        with second_store.proposal_lease(study.id, wait_s=0.3) as lease:
            assert lease is None
        assert 0.25 < time.perf_counter() - started < 1.5 and buffered() == 0
        # and when the fit ends it gets the lease, with its proposal stored already: the fit counted it among the
        # waiting workers and proposed one configuration for each, one for the fitting worker and one for this one.
        with second_store.proposal_lease(study.id, wait_s=30.0) as lease:
            assert lease == LEASE_AFTER_FIT
            assert buffered() == 2
            assert second_store.proposal_waiters(study.id) == 0
        fitting.join(30)
        assert added == {"first": True}
        assert proposals.compute_proposal(second_store, study.id) is True  # the lease is free again
        with first_store.proposal_lease(study.id) as leased:  # a worker that dies mid-fit: its connection closes
            assert leased
            first_store.dispose()
        with second_store.proposal_lease(study.id) as leased:
            assert leased
    finally:
        first_store.dispose()
        second_store.dispose()


def test_workers_that_waited_for_a_fit_claim_its_proposals_one_at_a_time(tmp_path, postgres_url) -> None:
    """The workers whose claims needed a proposal while another process fitted the study's model get the study's
    lease one after another when the fit ends, and claim while they hold it: each takes the proposal the fit made
    for it, and none of them claims at the same moment as another (nor fits the model again)."""
    settings = load_settings({"TUNER_HOME": str(tmp_path / "home"), "TUNER_DATABASE_URL": postgres_url})
    fitter = Store(postgres_url)
    waiters = [Store(postgres_url) for _ in range(3)]  # each worker process's own connections
    fitter.upgrade()
    try:
        study, claimed = tpe_study_past_its_first_trial(fitter, settings, max_trials=10, parallelism=8)
        active, most, results = [0], [0], []
        guard = threading.Lock()

        def worker(store: Store, name: str) -> None:
            def claim() -> object:
                with guard:
                    active[0] += 1
                    most[0] = max(most[0], active[0])
                try:
                    result = claim_once(store, "cpu", ticket=uuid.uuid4().hex, worker=name, heartbeat_timeout_s=60)
                    time.sleep(0.2)  # a claim slow enough that claims made at the same moment would overlap
                    return result
                finally:
                    with guard:
                        active[0] -= 1

            results.append(claim_after_propose(store, study.id, claim))

        threads = [threading.Thread(target=worker, args=(store, f"w{i}")) for i, store in enumerate(waiters)]
        with fitter.proposal_lease(study.id) as lease:  # the fitting worker holds the study's lease
            assert lease == LEASE_FREE
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while fitter.proposal_waiters(study.id) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert fitter.proposal_waiters(study.id) == 3
            assert proposals.fit_proposals(fitter, study.id)  # it counts the three workers waiting for it
        for thread in threads:
            thread.join(60)
        assert len(results) == 3 and all(isinstance(r, Claim) and r.study.id == study.id for r in results)
        assert len({config_key(r.values) for r in results} | {config_key(claimed.values)}) == 4
        assert most[0] == 1, "the waiting workers claimed at the same moment"
        # One fit made all the proposals (one for the fitting worker, still buffered, and one per waiting worker).
        state = fitter.get_study(study.id).oracle_state["proposer"]
        assert len(state["proposals"]) == 1 and state["counter"] == 1 + 4
    finally:
        fitter.dispose()
        for store in waiters:
            store.dispose()


def test_a_claim_that_needs_a_proposal_fits_it_and_reports_the_fit_apart_from_its_claims(
    tmp_path, postgres_url
) -> None:
    """claim_through_proposals (claim_next's loop, which the claim benchmark shares): a claim that answers Propose
    has the model fitted and claims again, and the hook gets the time spent on the fit alone, not the claims."""
    settings = load_settings({"TUNER_HOME": str(tmp_path / "home"), "TUNER_DATABASE_URL": postgres_url})
    store = Store(postgres_url)
    store.upgrade()
    try:
        study, claimed = tpe_study_past_its_first_trial(store, settings, max_trials=4, parallelism=2)
        answers: list[str] = []
        fits: list[float] = []

        def claim() -> object:
            result = claim_once(store, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
            answers.append(type(result).__name__)
            time.sleep(0.5)  # a slow claim: its time must not count as the fit's
            return result

        started = time.perf_counter()
        result = claim_through_proposals(store, claim, delay_s=0.3, on_proposal=fits.append)
        elapsed = time.perf_counter() - started
        assert isinstance(result, Claim) and result.study.id == study.id
        assert config_key(result.values) != config_key(claimed.values)
        assert answers == ["Propose", "Claim"]
        assert len(fits) == 1 and 0.3 <= fits[0] <= elapsed - 1.0, (fits, elapsed)
    finally:
        store.dispose()


def test_concurrent_claims_respect_parallelism_and_team_quota_without_a_global_lock(tmp_path, postgres_url) -> None:
    """Eight workers claim at the same instant: each study's parallelism and the team's quota hold (they are
    checked again under the study's lock and the team's claim lock), and a study whose lock another claim holds
    is passed over for the next one instead of waited for."""
    settings = load_settings({"TUNER_HOME": str(tmp_path / "home"), "TUNER_DATABASE_URL": postgres_url})
    store = Store(postgres_url)
    store.upgrade()
    stores = [Store(postgres_url) for _ in range(8)]
    try:
        capped = store.create_team("capped", max_concurrent_trials=2)
        free = store.create_team("free")
        enqueue = lambda pool, n: None  # noqa: E731 - the claims below stand for the workers
        for index in range(2):
            doc = digits_study(name=f"capped-{index}", parallelism=3, max_trials=20)
            submit_study(store, settings, doc, enqueue, team_id=capped.id)
        narrow = submit_study(
            store, settings, digits_study(name="narrow", parallelism=1, max_trials=20), enqueue, team_id=free.id
        )
        wide = submit_study(
            store, settings, digits_study(name="wide", parallelism=8, max_trials=20), enqueue, team_id=free.id
        )
        barrier = threading.Barrier(len(stores))
        claims: list[object] = []

        def claim(own: Store, name: str) -> None:
            barrier.wait()
            claims.append(claim_once(own, "cpu", ticket=uuid.uuid4().hex, worker=name, heartbeat_timeout_s=60))

        threads = [threading.Thread(target=claim, args=(s, f"w{i}")) for i, s in enumerate(stores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(claims) == 8 and all(isinstance(c, Claim) for c in claims), claims
        running = {}
        for c in claims:
            running[c.study.id] = running.get(c.study.id, 0) + 1
        capped_running = sum(n for study_id, n in running.items() if study_id not in (narrow.id, wide.id))
        assert capped_running <= 2, running
        assert running.get(narrow.id, 0) <= 1, running
        assert sum(running.values()) == 8

        # While one transaction holds the wide study's lock, a claim goes to the team's next study of the same
        # priority; a study of a lower priority never overtakes a locked one: the claim waits for the lock.
        more = submit_study(store, settings, digits_study(name="more", max_trials=20), enqueue, team_id=free.id)
        low = submit_study(store, settings, digits_study(name="low", priority="low"), enqueue, team_id=free.id)
        held, release = threading.Event(), threading.Event()

        def hold(*study_ids: int) -> None:
            with contextlib.ExitStack() as locks:
                for study_id in study_ids:
                    locks.enter_context(store.locked_study(study_id))
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold, args=(wide.id,))
        holder.start()
        assert held.wait(10)
        try:
            answer = claim_once(stores[0], "cpu", ticket=uuid.uuid4().hex, worker="w0", heartbeat_timeout_s=60)
            assert isinstance(answer, Claim) and answer.study.id == more.id, answer
        finally:
            release.set()
            holder.join(30)
        held.clear()
        release.clear()
        holder = threading.Thread(target=hold, args=(wide.id, more.id))
        holder.start()
        assert held.wait(10)
        waiting: list[object] = []
        claimer = threading.Thread(
            target=lambda: waiting.append(
                claim_once(stores[1], "cpu", ticket=uuid.uuid4().hex, worker="w1", heartbeat_timeout_s=60)
            )
        )
        try:
            claimer.start()
            claimer.join(1.0)
            assert claimer.is_alive(), f"the low-priority study overtook the locked ones: {waiting}"
        finally:
            release.set()
            holder.join(30)
            claimer.join(30)
        assert isinstance(waiting[0], Claim) and waiting[0].study.id in (wide.id, more.id), waiting
        assert store.trial_counts(low.id) == {}
    finally:
        store.dispose()
        for own in stores:
            own.dispose()


def test_a_claim_serves_the_next_team_while_the_first_teams_studies_are_locked(tmp_path, postgres_url) -> None:
    """The team whose turn it is has every study locked (being served): a claim starts a trial of the next
    team's study of the same priority at once, while the locks are still held, instead of waiting for them; a
    study of a lower priority does not get the worker that way."""
    settings = load_settings({"TUNER_HOME": str(tmp_path / "home"), "TUNER_DATABASE_URL": postgres_url})
    store, claimer = Store(postgres_url), Store(postgres_url)
    store.upgrade()
    try:
        first, second = store.create_team("first"), store.create_team("second")
        enqueue = lambda pool, n: None  # noqa: E731 - the claims below stand for the workers
        own = [submit_study(store, settings, digits_study(name=f"a{i}"), enqueue, team_id=first.id) for i in (0, 1)]
        low = submit_study(store, settings, digits_study(name="low", priority="low"), enqueue, team_id=second.id)
        other = submit_study(store, settings, digits_study(name="b"), enqueue, team_id=second.id)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with contextlib.ExitStack() as locks:
                for study in own:
                    locks.enter_context(store.locked_study(study.id))
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        try:
            answer = claim_once(claimer, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
            assert holder.is_alive(), "the claim returned only once the locks were released"
        finally:
            release.set()
            holder.join(30)
        assert isinstance(answer, Claim) and answer.study.id == other.id, answer
        assert store.trial_counts(low.id) == {}
        # With the locks free again, the first team's study is served first (the order is unchanged).
        again = claim_once(claimer, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
        assert isinstance(again, Claim) and again.study.id == own[0].id, again
    finally:
        store.dispose()
        claimer.dispose()


def test_a_claim_that_waited_for_the_lock_while_another_claimed_counts_the_trials_again(
    tmp_path, postgres_url, monkeypatch
) -> None:
    """A claim that does not wait for a study's lock reads the study's trial load in the statement that takes
    the lock. That statement's snapshot is taken before the lock (PostgreSQL), so a load read so while waiting
    for another claim to commit misses that claim's trial, and the new trial's number collides (StaleLoad): a
    claim that waits for the lock reads the load apart, and gets the next number."""
    settings = load_settings({"TUNER_HOME": str(tmp_path / "home"), "TUNER_DATABASE_URL": postgres_url})
    holder, claimer = Store(postgres_url), Store(postgres_url)
    holder.upgrade()
    modes: list[bool] = []
    with_study_lock = Store.with_study_lock

    def recording(self, *args, **kwargs):  # noqa: ANN001, ANN202 - Store.with_study_lock's signature
        if self is claimer:
            modes.append(kwargs.get("optimistic", False))
        return with_study_lock(self, *args, **kwargs)

    monkeypatch.setattr(Store, "with_study_lock", recording)

    def while_a_claim_holds_the_lock(study_id: int, number: int, other: Callable[[], object]) -> list[object]:
        """``other()`` in a thread while a transaction holds the study's lock and adds trial ``number``."""
        inserted, answers = threading.Event(), []

        def run() -> None:
            inserted.wait(10)
            try:
                answers.append(other())
            except Exception as exc:  # noqa: BLE001 - the test looks at what was raised
                answers.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        with holder.locked_study(study_id) as tx:
            tx.add_trial(
                number=number, oracle_trial_id=str(number), ticket=uuid.uuid4().hex, hyperparameters={"units": number},
                oracle_trial_state=None, worker="a",
            )  # fmt: skip
            inserted.set()
            time.sleep(1.5)  # the other transaction is waiting for the study's lock by now
        thread.join(30)
        return answers

    def optimistic_insert(study_id: int) -> object:
        with claimer.locked_study(study_id, optimistic=True) as tx:
            return tx.add_trial(
                number=tx.load().total, oracle_trial_id="x", ticket=uuid.uuid4().hex, hyperparameters={"units": 99},
                oracle_trial_state=None, worker="b",
            )  # fmt: skip

    try:
        doc = digits_study(algorithm={"name": "random"}, max_trials=10, parallelism=4)
        study = submit_study(holder, settings, doc, lambda pool, n: None)
        answers = while_a_claim_holds_the_lock(study.id, 0, lambda: optimistic_insert(study.id))
        assert len(answers) == 1 and isinstance(answers[0], StaleLoad), answers  # the load from before the wait
        answers = while_a_claim_holds_the_lock(
            study.id, 1, lambda: claim_once(claimer, "cpu", ticket=uuid.uuid4().hex, worker="b", heartbeat_timeout_s=60)
        )
        assert len(answers) == 1 and isinstance(answers[0], Claim), answers
        assert answers[0].trial.number == 2
        assert modes == [True, False], modes  # passed over the locked study (optimistic), then waited (read apart)
    finally:
        holder.dispose()
        claimer.dispose()


def _report_at_once(stores: list[Store], study_id: int, claims: list[Claim]) -> list[object]:
    """Each claim's trial reported (a higher score for each next one) from its own store's thread, all released at
    the same instant; what each ``finish_trial`` answered or raised."""
    barrier = threading.Barrier(len(claims))
    answers: list[object] = []

    def report(own: Store, claim: Claim, score: float) -> None:
        outcome = TrialOutcome("completed", {"val_accuracy": score}, best_epoch=0)
        barrier.wait()
        try:
            answers.append(finish_trial(own, study_id, claim.trial.id, outcome))
        except Exception as exc:  # noqa: BLE001 - the test looks at what was raised
            answers.append(exc)

    threads = [
        threading.Thread(target=report, args=(own, claim, 0.5 + i / 10))
        for i, (own, claim) in enumerate(zip(stores, claims, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_reports_of_a_studys_last_trials_made_at_once_complete_it(tmp_path, postgres_url) -> None:
    """The last two trials of a random study report at the same instant from two workers: each report is stored
    without the study's lock, then decides under the lock whether the study is complete. Whatever order the two
    commits and the two lock holders take, the study ends completed with both results stored, and no report
    asks for more work."""
    settings = load_settings({"TUNER_HOME": str(tmp_path / "home"), "TUNER_DATABASE_URL": postgres_url})
    store = Store(postgres_url)
    store.upgrade()
    reporters = [Store(postgres_url) for _ in range(2)]
    try:
        for round_ in range(8):
            doc = digits_study(name=f"last-{round_}", algorithm={"name": "random"}, max_trials=2, parallelism=2)
            study = submit_study(store, settings, doc, lambda pool, n: None)
            claims = [
                claim_once(store, "cpu", ticket=uuid.uuid4().hex, worker=f"w{i}", heartbeat_timeout_s=60)
                for i in range(2)
            ]
            assert all(isinstance(c, Claim) and c.study.id == study.id for c in claims), claims
            answers = _report_at_once(reporters, study.id, claims)
            assert len(answers) == 2 and not any(isinstance(a, Exception) for a in answers), answers
            assert not any(a.more_work for a in answers), answers
            assert "completed" in {a.study_status for a in answers}, answers
            assert store.get_study(study.id).status == "completed"
            assert store.trial_counts(study.id) == {"completed": 2}
            assert store.get_study(study.id).best_trial_id == claims[1].trial.id  # the higher score of the two
    finally:
        store.dispose()
        for own in reporters:
            own.dispose()
