"""Who is calling: teams, users, roles and API tokens (random, shown once, stored as a SHA-256)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

# admin: the deployment's administrator, who sees and steers every team. team_admin: a team's own
# administrator, who manages its team's users, tokens and studies and sees nothing of other teams.
ROLES = ("admin", "team_admin", "member", "viewer")
TOKEN_PREFIX = "tks_"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    user_id: int
    user_name: str
    team_id: int
    team_name: str
    role: str
    # The user's session version when this principal was read; a dashboard session made under an older
    # one was signed out.
    session_version: int = 0

    @property
    def is_admin(self) -> bool:
        """The deployment's admin (every team), not a team's."""
        return self.role == "admin"

    @property
    def can_write(self) -> bool:
        return self.role in ("admin", "team_admin", "member")

    def can_manage(self, team_id: int) -> bool:
        """Whether this caller may manage the users and tokens of team ``team_id``."""
        return self.is_admin or (self.role == "team_admin" and self.team_id == team_id)

    @property
    def scope(self) -> int | None:
        """The team whose data this caller sees; ``None`` for an admin, who sees every team's."""
        return None if self.is_admin else self.team_id


@dataclass(frozen=True)
class NewToken:
    """A freshly made token: ``secret`` is shown once and never stored."""

    secret: str
    digest: str
    prefix: str


def make_token() -> NewToken:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return NewToken(secret=secret, digest=token_digest(secret), prefix=secret[:12])


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def admin_token_path(home: Path) -> Path:
    """Where ``tuner-service up`` keeps the local admin token (mode 0600), which the CLI reads."""
    return home / "admin-token"


def api_url_path(home: Path) -> Path:
    """Where ``tuner-service up`` writes the address it listens on, so the CLI finds it on any port."""
    return home / "api-url"
