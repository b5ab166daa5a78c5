"""GPU slots: what a trial takes of a GPU shared by K worker processes, checked on the real claim path and a
real store (SQLite, and PostgreSQL with its GPU lock). Workers are named as the launcher names them
(``host:pid:gpu0.1``); no GPU is needed, as claiming never touches one."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import func, select

from tests.conftest import digits_study
from tuner_service.errors import InvalidInput
from tuner_service.gpu_slots import (
    WAIT_FOR_SLOTS_S,
    GpuPlace,
    must_hold_back,
    open_gate,
    requested_slots,
    slots_in_use,
    slots_taken,
)
from tuner_service.search import Claim, TrialOutcome, Wait, claim_next, finish_trial
from tuner_service.store import Store
from tuner_service.store.slots import GPU_LOCK_NAMESPACE, SlotHolder, gpu_lock_key
from tuner_service.study import StudySpec, submit_study

pytest.importorskip("keras_tuner")

HOST = "gpuhost"


def slot_wait(answer: object) -> bool:
    """Whether a claim answered: wait for this GPU's slots."""
    return isinstance(answer, Wait) and answer.seconds == WAIT_FOR_SLOTS_S


def test_a_trial_takes_its_slots_up_to_the_whole_gpu() -> None:
    assert requested_slots({"resources": {"gpu": 1}}) == 1
    assert requested_slots({"resources": {"gpu": 1, "gpu_slots": 3}}) == 3
    assert [slots_taken(asked, per_gpu=2) for asked in (1, 2, 3, 64)] == [1, 2, 2, 2]
    assert slots_taken(4, per_gpu=1) == 1, "one process per GPU: every trial has the GPU to itself"
    first, second = GpuPlace(HOST, "0", per_gpu=2, process=0), GpuPlace(HOST, "0", per_gpu=2, process=1)
    assert first.may_start(1, taken=1) and second.may_start(1, taken=1)
    assert not first.may_start(1, taken=2), "both slots taken"
    assert first.may_start(2, taken=0) and not first.may_start(2, taken=1)
    assert not second.may_start(2, taken=0), "only the GPU's first process has the memory of several slots"


def gone_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def worker(pid: int, process: int) -> str:
    return f"{HOST}:{pid}:gpu0.{process}"


def test_slots_are_held_while_their_process_lives() -> None:
    me, gone = os.getpid(), gone_pid()
    running = SlotHolder(1, 1, worker(me, 1), running=True)
    assert slots_in_use([running, SlotHolder(2, 2, worker(me, 0), running=False)]) == 3, "finished, still held"
    assert slots_in_use([running, SlotHolder(2, 2, worker(gone, 0), running=False)]) == 1, "its process exited"
    assert slots_in_use([running, SlotHolder(3, 1, worker(me, 0), running=False)]) == 1, "one slot: no memory kept"
    assert slots_in_use([SlotHolder(4, 1, worker(gone, 1), running=True)]) == 0, "a killed worker's trial"
    assert slots_in_use([running], ignoring=1) == 0, "a claim taking over its own trial does not count it"


def test_a_process_passes_over_a_trial_of_several_slots_only_while_it_leaves_room_for_it() -> None:
    me = os.getpid()
    first, second = GpuPlace(HOST, "0", per_gpu=4, process=0), GpuPlace(HOST, "0", per_gpu=4, process=1)
    first_runs_two = SlotHolder(1, 2, worker(me, 0), running=True)
    third_runs_one, fourth_runs_one = (SlotHolder(n, 1, worker(me, n), running=True) for n in (2, 3))
    # K = 4: beside the first process's trial of two slots, the others may take one slot each as long as the
    # first process can start the next trial of two as soon as its own ends.
    assert not must_hold_back(second, 2, [first_runs_two])
    assert not must_hold_back(second, 2, [first_runs_two, third_runs_one])
    assert must_hold_back(second, 2, [third_runs_one, fourth_runs_one]), "one more would leave 1 slot of 4"
    assert must_hold_back(first, 2, [third_runs_one, fourth_runs_one, SlotHolder(4, 1, worker(me, 1), True)])
    assert must_hold_back(second, 1, [first_runs_two, third_runs_one, fourth_runs_one]), "the GPU is full"
    # K = 2: the second process never takes the slot the first needs.
    assert must_hold_back(GpuPlace(HOST, "0", per_gpu=2, process=1), 2, [SlotHolder(1, 1, worker(me, 0), True)])


@pytest.mark.parametrize(
    ("resources", "reason"),
    [
        ({"gpu": 1, "gpu_slots": 0}, "between 1 and 64"),
        ({"gpu": 1, "gpu_slots": 65}, "between 1 and 64"),
        ({"gpu": 1, "gpu_slots": True}, "between 1 and 64"),
        ({"gpu": 1, "gpu_slots": "2"}, "between 1 and 64"),
        ({"cpu": 1, "gpu_slots": 2}, "only for studies that ask for a GPU"),
    ],
)
def test_gpu_slots_must_be_a_whole_number_of_slots_on_a_gpu_study(resources: dict, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        StudySpec.from_json(digits_study(resources=resources))
    assert [(e.field, reason in e.reason) for e in refused.value.errors] == [("resources.gpu_slots", True)]


def test_gpu_slots_are_kept_in_the_study_spec() -> None:
    spec = StudySpec.from_json(digits_study(resources={"gpu": 1, "gpu_slots": 2}))
    assert (spec.pool, spec.gpu_slots) == ("gpu", 2)
    assert spec.to_json()["resources"] == {"gpu": 1, "gpu_slots": 2}
    assert StudySpec.from_json(digits_study(resources={"gpu": 1})).to_json()["resources"] == {"gpu": 1}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def any_store(request, store: Store) -> Store:
    if request.param == "sqlite":
        return store
    postgres = Store(request.getfixturevalue("postgres_url"))
    postgres.upgrade()
    request.addfinalizer(postgres.dispose)
    return postgres


def claim(store: Store, place: GpuPlace, pid: int | None = None) -> Claim | Wait:
    pid = pid or os.getpid()  # a live process: its trials hold their slots while they run
    result = claim_next(
        store,
        "gpu",
        ticket=uuid.uuid4().hex,
        worker=f"{place.host}:{pid}:gpu{place.gpu}.{place.process}",
        gpu=place.gpu,
        heartbeat_timeout_s=60.0,
        place=place,
    )
    assert isinstance(result, (Claim, Wait)), result
    return result


def finish(store: Store, claimed: Claim) -> None:
    outcome = TrialOutcome("completed", metrics={"val_accuracy": 0.5}, best_epoch=0)
    finish_trial(store, claimed.study.id, claimed.trial.id, outcome)


def test_k_processes_share_a_gpus_slots_and_a_trial_of_all_of_them_runs_alone(any_store: Store, settings) -> None:
    store = any_store

    def submit(**overrides):
        doc = digits_study(**{"resources": {"gpu": 1}, "max_trials": 8, "parallelism": 8, **overrides})
        return submit_study(store, settings, doc, lambda pool, n: None).id

    small = submit(name="one-slot")
    first, second = GpuPlace(HOST, "0", per_gpu=2, process=0), GpuPlace(HOST, "0", per_gpu=2, process=1)
    elsewhere = GpuPlace(HOST, "1", per_gpu=2, process=0)

    # K = 2: two trials of one slot run at once on one GPU; a third waits (its message comes back later).
    a, b = claim(store, first), claim(store, second)
    assert isinstance(a, Claim) and isinstance(b, Claim) and (a.trial.gpu_slots, b.trial.gpu_slots) == (1, 1)
    assert slot_wait(claim(store, first))
    assert isinstance(claim(store, GpuPlace("otherhost", "0", per_gpu=2)), Claim), "another host's GPU 0 is free"

    # A study of two slots, served first: the GPU drains for it. Neither process claims the one-slot study
    # meanwhile, and the second process never starts a trial of two slots.
    big = submit(name="two-slots", resources={"gpu": 1, "gpu_slots": 2}, priority="high", parallelism=1)
    finish(store, a)
    assert slot_wait(claim(store, first)), "one slot free, two needed"
    finish(store, b)
    assert slot_wait(claim(store, second)), "the second process holds back for the first"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        whole = claim(store, first, pid=sleeper.pid)
        assert isinstance(whole, Claim) and whole.study.id == big and whole.trial.gpu_slots == 2
        assert store.get_trial(big, whole.trial.id).to_json()["gpu_slots"] == 2
        assert {r["trial_id"]: r["gpu_slots"] for r in store.running_trials()}[whole.trial.id] == 2  # the queue
        assert slot_wait(claim(store, second)), "the two-slot trial has the GPU to itself"
        other_gpu = claim(store, elsewhere)  # the big study is at its parallelism: GPU 1 serves the small one
        assert isinstance(other_gpu, Claim) and other_gpu.study.id == small and other_gpu.trial.gpu == "1"

        # Finished, its slots stay taken until its process (which restarts to free the memory) is gone.
        finish(store, whole)
        assert slot_wait(claim(store, first)), "the restarted first process waits for the old one"
    finally:
        sleeper.kill()
        sleeper.wait()
    again = claim(store, first)
    assert isinstance(again, Claim) and again.study.id == big and again.trial.gpu_slots == 2


@pytest.mark.integration
def test_a_claim_holds_its_gpus_lock_until_it_commits(postgres_url: str) -> None:
    store = Store(postgres_url)
    store.upgrade()
    try:
        place = GpuPlace(HOST, "0", per_gpu=2)

        def try_lock(gpu: str) -> bool:
            with store.engine.connect() as other:
                key = gpu_lock_key(HOST, gpu)
                return bool(other.scalar(select(func.pg_try_advisory_xact_lock(GPU_LOCK_NAMESPACE, key))))

        with store._write() as session:  # a claim's transaction
            open_gate(session, place)
            seen = (try_lock("0"), try_lock("1"))
        assert seen == (False, True), "this GPU is locked for the claim, another GPU is not"
        assert try_lock("0"), "released with the claim's transaction"
    finally:
        store.dispose()


def test_beside_a_trial_of_two_slots_of_four_the_other_processes_take_the_rest(store: Store, settings) -> None:
    def submit(name: str, **overrides) -> int:
        doc = digits_study(**{"name": name, "resources": {"gpu": 1}, "max_trials": 8, "parallelism": 8, **overrides})
        return submit_study(store, settings, doc, lambda pool, n: None).id

    small = submit("one-slot")
    big = submit("two-slots", resources={"gpu": 1, "gpu_slots": 2}, priority="high")
    places = [GpuPlace(HOST, "0", per_gpu=4, process=k) for k in range(4)]
    first = claim(store, places[0])
    assert isinstance(first, Claim) and first.study.id == big and first.trial.gpu_slots == 2
    for place in places[1:3]:  # the big study is served first, but they cannot run it: they pass over it
        other = claim(store, place)
        assert isinstance(other, Claim) and other.study.id == small and other.trial.gpu_slots == 1
    assert slot_wait(claim(store, places[3])), "all four slots taken"
