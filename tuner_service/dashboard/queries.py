"""Read-only queries the dashboard needs and the Store does not offer (yet): a session's principal by token
digest, user names, and every epoch of a study in one query."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select

from tuner_service.accounts import Principal
from tuner_service.store import EpochRecord, Store
from tuner_service.store.models import EpochRow, TeamRow, TokenRow, TrialRow, UserRow, utcnow


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def principal_by_digest(store: Store, digest: str) -> Principal | None:
    """The principal whose token has this SHA-256 digest, by the rules of ``Store.authenticate``: unknown,
    revoked or expired tokens stand for nobody. Read-only: it leaves ``last_used_at`` to the sign-in."""
    with store._read() as session:
        found = session.execute(
            select(
                TokenRow.revoked_at,
                TokenRow.expires_at,
                UserRow.id,
                UserRow.name,
                TeamRow.id,
                TeamRow.name,
                UserRow.role,
            )
            .join(UserRow, UserRow.id == TokenRow.user_id)
            .join(TeamRow, TeamRow.id == UserRow.team_id)
            .where(TokenRow.token_hash == digest)
        ).first()
    if found is None:
        return None
    revoked_at, expires_at, user_id, user_name, team_id, team_name, role = found
    if revoked_at is not None or (expires_at is not None and _aware(expires_at) <= utcnow()):
        return None
    return Principal(user_id, user_name, team_id, team_name, role)


def user_names(store: Store, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    with store._read() as session:
        return dict(session.execute(select(UserRow.id, UserRow.name).where(UserRow.id.in_(wanted))).all())


def study_epochs(store: Store, study_id: int) -> dict[int, list[EpochRecord]]:
    """Every trial's epochs of the first execution, by trial id, in one query (learning curves)."""
    query = (
        select(EpochRow)
        .join(TrialRow, TrialRow.id == EpochRow.trial_id)
        .where(TrialRow.study_id == study_id, EpochRow.execution == 0)
        .order_by(EpochRow.trial_id, EpochRow.epoch)
    )
    out: dict[int, list[EpochRecord]] = {}
    with store._read() as session:
        for row in session.scalars(query):
            out.setdefault(row.trial_id, []).append(EpochRecord.of(row))
    return out
