"""Queries of teams, users and tokens (mixed into :class:`~tuner_service.store.Store`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tuner_service.accounts import ROLES, NewToken, Principal, make_token, token_digest
from tuner_service.errors import Conflict, InvalidInput, NotFound
from tuner_service.store.models import TeamRow, TokenRow, UserRow, as_utc, utcnow

# Refreshing last_used_at on every request would turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class TeamRecord:
    """A team with its share weight and quotas."""

    id: int
    name: str
    share_weight: float
    max_concurrent_trials: int | None
    gpu_hours_per_day: float | None
    max_model_params: int | None = None

    @classmethod
    def of(cls, row: TeamRow) -> TeamRecord:
        return cls(
            row.id, row.name, row.share_weight, row.max_concurrent_trials, row.gpu_hours_per_day, row.max_model_params
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenRecord:
    """A stored token (never its secret)."""

    id: int
    user_name: str
    prefix: str
    label: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class AccountQueries:
    """Teams, users and tokens; expects ``_read``, ``_write`` and ``_retrying`` from the Store."""

    _read: Any
    _write: Any
    _retrying: Any

    def create_team(
        self,
        name: str,
        *,
        share_weight: float = 1.0,
        max_concurrent_trials: int | None = None,
        gpu_hours_per_day: float | None = None,
        max_model_params: int | None = None,
    ) -> TeamRecord:
        if share_weight <= 0:
            raise InvalidInput.one("share_weight", "must be greater than 0")
        if max_model_params is not None and max_model_params < 1:
            raise InvalidInput.one("max_model_params", "must be at least 1")

        def attempt() -> TeamRecord:
            with self._write() as session:
                row = TeamRow(
                    name=name,
                    share_weight=share_weight,
                    max_concurrent_trials=max_concurrent_trials,
                    gpu_hours_per_day=gpu_hours_per_day,
                    max_model_params=max_model_params,
                )
                session.add(row)
                session.flush()
                return TeamRecord.of(row)

        try:
            return self._retrying(attempt)
        except IntegrityError:
            raise Conflict(f"team {name!r} already exists") from None

    def update_team(self, name: str, **changes: Any) -> TeamRecord:
        def attempt() -> TeamRecord:
            with self._write() as session:
                row = session.scalar(select(TeamRow).where(TeamRow.name == name))
                if row is None:
                    raise NotFound("team", name)
                for key, value in changes.items():
                    setattr(row, key, value)
                return TeamRecord.of(row)

        return self._retrying(attempt)

    def get_team(self, name: str) -> TeamRecord:
        with self._read() as session:
            row = session.scalar(select(TeamRow).where(TeamRow.name == name))
            if row is None:
                raise NotFound("team", name)
            return TeamRecord.of(row)

    def team_model_limit(self, team_id: int | None) -> int | None:
        """The team's own limit on model parameters (None: the deployment's applies)."""
        if team_id is None:
            return None
        with self._read() as session:
            return session.scalar(select(TeamRow.max_model_params).where(TeamRow.id == team_id))

    def list_teams(self) -> list[TeamRecord]:
        with self._read() as session:
            return [TeamRecord.of(r) for r in session.scalars(select(TeamRow).order_by(TeamRow.id))]

    def create_user(self, name: str, team: str, role: str) -> Principal:
        if role not in ROLES:
            raise InvalidInput.one("role", f"must be one of {', '.join(ROLES)}")

        def attempt() -> Principal:
            with self._write() as session:
                team_row = session.scalar(select(TeamRow).where(TeamRow.name == team))
                if team_row is None:
                    raise NotFound("team", team)
                row = UserRow(name=name, team_id=team_row.id, role=role)
                session.add(row)
                session.flush()
                return Principal(row.id, row.name, team_row.id, team_row.name, row.role)

        try:
            return self._retrying(attempt)
        except IntegrityError:
            raise Conflict(f"user {name!r} already exists") from None

    def create_token(
        self, user: str, *, expires_at: datetime | None = None, label: str | None = None
    ) -> tuple[NewToken, TokenRecord]:
        """Make a token for ``user``; the returned secret is the only copy there will ever be."""
        token = make_token()

        def attempt() -> TokenRecord:
            with self._write() as session:
                user_row = session.scalar(select(UserRow).where(UserRow.name == user))
                if user_row is None:
                    raise NotFound("user", user)
                row = TokenRow(
                    user_id=user_row.id,
                    token_hash=token.digest,
                    prefix=token.prefix,
                    label=label,
                    expires_at=expires_at,
                )
                session.add(row)
                session.flush()
                return TokenRecord(row.id, user, row.prefix, label, row.created_at, expires_at, None)

        return token, self._retrying(attempt)

    def revoke_token(self, prefix_or_secret: str) -> int:
        """Revoke the tokens a secret or a displayed prefix names; returns how many were revoked."""
        key = prefix_or_secret.strip()

        def attempt() -> int:
            with self._write() as session:
                query = select(TokenRow).where(TokenRow.revoked_at.is_(None))
                if len(key) > 16:
                    query = query.where(TokenRow.token_hash == token_digest(key))
                else:
                    query = query.where(TokenRow.prefix == key)
                rows = list(session.scalars(query))
                for row in rows:
                    row.revoked_at = utcnow()
                return len(rows)

        return self._retrying(attempt)

    def authenticate(self, secret: str) -> Principal | None:
        """The principal a bearer token stands for, or ``None`` (unknown, revoked or expired)."""
        return self.authenticate_digest(token_digest(secret), touch=True)

    def authenticate_digest(self, digest: str, *, touch: bool = False) -> Principal | None:
        """Like :meth:`authenticate`, from the token's SHA-256 (what a dashboard session keeps).

        ``touch`` records the use in ``last_used_at`` (at most once a minute, so reads stay reads).
        """
        with self._read() as session:
            found = session.execute(
                select(TokenRow, UserRow, TeamRow)
                .join(UserRow, UserRow.id == TokenRow.user_id)
                .join(TeamRow, TeamRow.id == UserRow.team_id)
                .where(TokenRow.token_hash == digest)
            ).first()
        if found is None:
            return None
        token, user, team = found
        now = utcnow()
        if token.revoked_at is not None or (token.expires_at is not None and as_utc(token.expires_at) <= now):
            return None
        if touch and (token.last_used_at is None or now - as_utc(token.last_used_at) > LAST_USED_RESOLUTION):
            self._touch(token.id, now)
        return Principal(user.id, user.name, team.id, team.name, user.role, user.session_version)

    def end_sessions(self, user_id: int) -> int:
        """Sign the user's dashboard sessions out everywhere (copies of their cookies included); returns the
        new session version."""

        def attempt() -> int:
            with self._write() as session:
                row = session.get(UserRow, user_id)
                if row is None:
                    raise NotFound("user", user_id)
                row.session_version = (row.session_version or 0) + 1
                return row.session_version

        return self._retrying(attempt)

    def team_users(self, team_id: int | None) -> list[Principal]:
        """The users of a team (every team's for None), with their roles."""
        query = select(UserRow, TeamRow).join(TeamRow, TeamRow.id == UserRow.team_id).order_by(UserRow.id)
        if team_id is not None:
            query = query.where(UserRow.team_id == team_id)
        with self._read() as session:
            return [Principal(u.id, u.name, t.id, t.name, u.role, u.session_version) for u, t in session.execute(query)]

    def find_user(self, name: str) -> Principal:
        with self._read() as session:
            found = session.execute(
                select(UserRow, TeamRow).join(TeamRow, TeamRow.id == UserRow.team_id).where(UserRow.name == name)
            ).first()
            if found is None:
                raise NotFound("user", name, field="user")
            user, team = found
            return Principal(user.id, user.name, team.id, team.name, user.role, user.session_version)

    def token_owner(self, prefix: str) -> Principal | None:
        """Who owns the token with this displayed prefix (None when no active token has it)."""
        with self._read() as session:
            found = session.execute(
                select(UserRow, TeamRow)
                .join(TokenRow, TokenRow.user_id == UserRow.id)
                .join(TeamRow, TeamRow.id == UserRow.team_id)
                .where(TokenRow.prefix == prefix, TokenRow.revoked_at.is_(None))
            ).first()
            if found is None:
                return None
            user, team = found
            return Principal(user.id, user.name, team.id, team.name, user.role, user.session_version)

    def user_names(self, ids: Iterable[int | None]) -> dict[int, str]:
        """Names of the users with these ids (owners shown next to studies)."""
        wanted = {i for i in ids if i is not None}
        if not wanted:
            return {}
        with self._read() as session:
            return dict(session.execute(select(UserRow.id, UserRow.name).where(UserRow.id.in_(wanted))).all())

    def _touch(self, token_id: int, when: datetime) -> None:
        def attempt() -> None:
            with self._write() as session:
                row = session.get(TokenRow, token_id)
                if row is not None:
                    row.last_used_at = when

        self._retrying(attempt)
