"""Queries behind a GPU's slots: which trials hold slots of one host's GPU, read under that GPU's lock."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tuner_service.store.models import TrialRow, utcnow

# The first key of every GPU lock (PostgreSQL advisory locks with two 32-bit keys, a key space apart from
# the queue lock's single 64-bit one); the second is a hash of host and GPU.
GPU_LOCK_NAMESPACE = 0x6770_7573


@dataclass(frozen=True)
class SlotHolder:
    """A trial that holds slots of a GPU: a running one, or one of several slots that finished lately (its
    process may still hold the memory it grew into)."""

    trial_id: int
    slots: int
    worker: str | None
    running: bool


def gpu_slot_holders(session: Session, host: str, gpu: str, *, finished_within_s: float) -> list[SlotHolder]:
    """The running trials of ``host``'s GPU ``gpu`` and its trials of several slots that finished within
    ``finished_within_s``, after taking the GPU's lock for the rest of the transaction: two processes of one
    GPU never both see a slot free.

    PostgreSQL: an advisory lock per host and GPU. SQLite: the write transaction already excludes every other
    writer. Trials of older releases, stored without ``gpu_slots``, count as one slot.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(GPU_LOCK_NAMESPACE, gpu_lock_key(host, gpu))))
    on_host = TrialRow.worker.like(_like_prefix(host) + "%", escape="\\")
    columns = (TrialRow.id, TrialRow.gpu_slots, TrialRow.worker, TrialRow.status)
    running = session.execute(select(*columns).where(TrialRow.status == "running", TrialRow.gpu == gpu, on_host))
    cutoff = utcnow() - timedelta(seconds=finished_within_s)
    recent = session.execute(
        select(*columns).where(TrialRow.gpu == gpu, TrialRow.gpu_slots > 1, TrialRow.finished_at >= cutoff, on_host)
    )
    holders: dict[int, SlotHolder] = {}
    for trial_id, slots, worker, status in [*running, *recent]:
        holders[trial_id] = SlotHolder(trial_id, slots or 1, worker, status == "running")
    return list(holders.values())


def set_gpu_slots(session: Session, trial_id: int, slots: int | None) -> None:
    """Record the slots a claimed trial takes (``None``: it trains on no GPU)."""
    session.execute(update(TrialRow).where(TrialRow.id == trial_id).values(gpu_slots=slots))


def gpu_lock_key(host: str, gpu: str) -> int:
    """A signed 32-bit key for the GPU's advisory lock (a collision only makes two GPUs share a lock)."""
    key = zlib.crc32(f"{host}\x00{gpu}".encode())
    return key - 2**32 if key >= 2**31 else key


def _like_prefix(host: str) -> str:
    """``host:`` as a LIKE pattern's literal prefix (worker names are ``host:pid:slot``)."""
    escaped = host.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + ":"
