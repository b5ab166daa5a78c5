"""How many of a GPU's slots a trial takes, and whether a worker process may start it now.

``tuner-service worker --gpus 0 --per-gpu K`` runs K processes on GPU 0: the GPU has K slots. A study's
``resources.gpu_slots`` (default 1) says how many slots each of its trials takes; on a GPU of K slots it takes
``min(gpu_slots, K)``, so a study that asks for K or more runs every trial alone on its GPU. A process may
start a trial when the slots its host's GPU has taken plus the trial's are at most K.

Memory follows the slots: only the GPU's first process (``gpu0.0``), whose memory cap is the whole GPU,
starts trials of several slots; the others are capped at 1/K each. After such a trial the first process
restarts (its launcher starts a fresh one), which is how the memory it grew into goes back to the GPU, and
the trial's slots stay taken until that process is gone.

A process that cannot start the study served next holds back instead of claiming studies ranked after it,
so studies of one slot do not starve a study of several: its GPU drains until the trial fits. Another
process of the GPU passes over it only while the first process could still start it, once its own trial
ends, beside the trial the passing process takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tuner_service.store.slots import SlotHolder, gpu_slot_holders, set_gpu_slots

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tuner_service.store import StudyRecord

MAX_GPU_SLOTS = 64
# A process held back by its GPU's slots asks again this often (its message goes back with this delay).
WAIT_FOR_SLOTS_S = 5.0
# A trial of several slots holds them after it finished while its process lives (it restarts at once); only
# for this long, so that its process id, reused later by another process, cannot hold them forever.
HELD_AFTER_FINISH_S = 600.0


def requested_slots(spec: dict[str, Any]) -> int:
    """The slots a study's trials ask for: ``resources.gpu_slots``, 1 when not given."""
    resources = spec.get("resources") or {}
    return int(resources.get("gpu_slots") or 1)


def slots_taken(requested: int, per_gpu: int) -> int:
    """The slots a trial asking for ``requested`` takes on a GPU of ``per_gpu`` slots: all of them at most."""
    return max(1, min(requested, per_gpu))


@dataclass(frozen=True)
class GpuPlace:
    """Where a GPU worker process trains: its host, its GPU (as ``CUDA_VISIBLE_DEVICES`` names it), the K
    processes that share that GPU, and which of them this one is (0: the first, capped at the whole GPU)."""

    host: str
    gpu: str
    per_gpu: int = 1
    process: int = 0

    def slots_for(self, study: StudyRecord) -> int:
        return slots_taken(requested_slots(study.spec), self.per_gpu)

    def may_start(self, slots: int, taken: int) -> bool:
        """Whether this process may start a trial of ``slots`` while ``taken`` slots of its GPU are in use."""
        return taken + slots <= self.per_gpu and (slots == 1 or self.process == 0)


def pid_of(worker: str | None) -> int | None:
    """The process id in a worker's name (``host:pid:slot``)."""
    parts = (worker or "").split(":")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def process_alive(pid: int | None) -> bool:
    """Whether a process of this host has that id (signal 0 checks without sending anything)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def holding(holders: list[SlotHolder], *, ignoring: int | None = None) -> list[SlotHolder]:
    """The ``holders`` whose slots are taken: those whose process is alive (the holders are of this host's
    GPU, so their processes are this host's), running trials and finished ones of several slots (that process
    holds the memory it grew into until it has restarted). A killed worker's trial, running until the reaper
    requeues it, gives its slots back at once: its process is gone, and its memory with it."""
    return [
        h for h in holders if h.trial_id != ignoring and (h.running or h.slots > 1) and process_alive(pid_of(h.worker))
    ]


def slots_in_use(holders: list[SlotHolder], *, ignoring: int | None = None) -> int:
    """How many of the GPU's slots are taken (by the :func:`holding` ones)."""
    return sum(h.slots for h in holding(holders, ignoring=ignoring))


def of_first_process(holder: SlotHolder) -> bool:
    """Whether the GPU's first process took it (the launcher names it ``gpuX.0``: ``host:pid:gpuX.0``)."""
    return (holder.worker or "").endswith(".0")


def must_hold_back(place: GpuPlace, slots: int, holders: list[SlotHolder]) -> bool:
    """Whether a process that cannot start a trial of ``slots`` now must claim nothing ranked after it.

    Yes for the GPU's first process (it is the one to start it) and for a trial of one slot (the GPU is
    full). Another process passes over a trial of several slots only if the first process could still start
    it once its own trial ends, beside the slots the others hold and the one this process would take.
    """
    if place.process == 0 or slots == 1:
        return True
    others = sum(h.slots for h in holding(holders) if not of_first_process(h))
    return others + 1 + slots > place.per_gpu


@dataclass
class SlotGate:
    """A GPU's slots as one claim sees them, read under the GPU's lock; without a place (a CPU worker) it
    admits every study and records nothing."""

    session: Session | None = None
    place: GpuPlace | None = None
    holders: list[SlotHolder] = field(default_factory=list)

    def admits(self, study: StudyRecord, *, replacing: int | None = None) -> bool:
        """Whether this process may start a trial of ``study`` now (``replacing``: a trial of this claim's
        own message whose slots are its to take over)."""
        if self.place is None:
            return True
        return self.place.may_start(self.place.slots_for(study), slots_in_use(self.holders, ignoring=replacing))

    def holds_back(self, study: StudyRecord) -> bool:
        """Whether this process, which cannot start ``study`` now, must wait rather than claim a study ranked
        after it (:func:`must_hold_back`)."""
        return self.place is not None and must_hold_back(self.place, self.place.slots_for(study), self.holders)

    def took(self, claim: Any) -> Any:
        """Record on the claimed trial the slots it takes; returns the claim with its trial record updated."""
        if self.place is None or self.session is None:
            return claim
        slots = self.place.slots_for(claim.study)
        set_gpu_slots(self.session, claim.trial.id, slots)
        self.holders.append(SlotHolder(claim.trial.id, slots, claim.trial.worker, running=True))
        return replace(claim, trial=replace(claim.trial, gpu_slots=slots))


def open_gate(session: Session, place: GpuPlace | None) -> SlotGate:
    """The gate of this claim's transaction: takes the GPU's lock (held until the claim commits) and reads
    its slots in use. Call it before the claim locks any study, so every claim takes its locks in one order."""
    if place is None:
        return SlotGate()
    holders = gpu_slot_holders(session, place.host, place.gpu, finished_within_s=HELD_AFTER_FINISH_S)
    return SlotGate(session, place, holders)
