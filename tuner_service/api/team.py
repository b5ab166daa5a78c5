"""A team's users and API tokens, managed over the API by the team's own administrator (role team_admin)
or by the deployment's admin; nobody else, and a team admin never reaches another team (404, as for
every other object)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify

from tuner_service.accounts import ROLES, Principal
from tuner_service.api import services
from tuner_service.api.auth import Forbidden, principal
from tuner_service.api.openapi import describe
from tuner_service.api.params import json_body
from tuner_service.contract import NewToken, NewUser, contract_errors
from tuner_service.errors import FieldError, InvalidInput, NotFound

bp = Blueprint("team", __name__, url_prefix="/api/v1")
TEAM_ROLES = ("team_admin", "member", "viewer")  # what a team admin may give; only the CLI makes admins
MAX_TOKEN_DAYS = 3650


def _manager() -> Principal:
    caller = principal()
    if not caller.can_manage(caller.team_id):
        raise Forbidden(f"user {caller.user_name} is not an admin of team {caller.team_name}")
    return caller


def _user_json(user: Principal) -> dict[str, Any]:
    return {"id": user.user_id, "name": user.user_name, "team": user.team_name, "role": user.role}


def _object(body: object, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput.one("body", "must be a JSON object")
    unknown = [FieldError(str(k), f"unknown field; known: {', '.join(known)}") for k in body if k not in known]
    if unknown:
        raise InvalidInput(unknown)
    return body


@bp.get("/users")
@describe(tag="team", responses={200: "The team's users", 403: "Not a team admin"}, returns="UserList")
def users() -> Response:
    """The users of the caller's team (of every team for the deployment's admin)."""
    caller = _manager()
    people = services().store.team_users(caller.scope)
    return jsonify({"items": [_user_json(u) for u in people], "total": len(people)})


@bp.post("/users")
@describe(
    tag="team",
    body="NewUser",
    responses={201: "Created", 403: "Not a team admin", 409: "The name is taken", 422: "Bad name or role"},
    returns="UserOut",
)
def create_user() -> tuple[Response, int]:
    """Add a user to the caller's team with a role: team_admin, member or viewer."""
    caller = _manager()
    body = _object(json_body(), ("name", "role"))
    errors = []
    name, role = body.get("name"), body.get("role", "member")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
        errors.append(FieldError("name", "is required: 1 to 100 characters"))
    allowed = ROLES if caller.is_admin else TEAM_ROLES
    if role not in allowed:
        errors.append(FieldError("role", f"must be one of {', '.join(allowed)}"))
    errors = errors or contract_errors(NewUser, body)
    if errors:
        raise InvalidInput(errors)
    user = services().store.create_user(name.strip(), caller.team_name, role)
    return jsonify(_user_json(user)), 201


@bp.post("/tokens")
@describe(
    tag="team",
    body="NewToken",
    responses={201: "The token; its secret is shown this once", 403: "Not a team admin", 422: "Bad user or expiry"},
    returns="TokenOut",
)
def create_token() -> tuple[Response, int]:
    """Make an API token for a user of the caller's team; the secret is in this answer only."""
    caller = _manager()
    body = _object(json_body(), ("user", "label", "expires_in_days"))
    errors = []
    days, label = body.get("expires_in_days"), body.get("label")
    if days is not None and (
        isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= MAX_TOKEN_DAYS
    ):
        errors.append(FieldError("expires_in_days", f"must be a number of days between 0 and {MAX_TOKEN_DAYS}"))
    if label is not None and (not isinstance(label, str) or len(label) > 200):
        errors.append(FieldError("label", "must be a string of at most 200 characters"))
    if not isinstance(body.get("user"), str):
        errors.append(FieldError("user", "is required: the name of a user of your team"))
    errors = errors or contract_errors(NewToken, body)
    if errors:
        raise InvalidInput(errors)
    store = services().store
    owner = _team_user(caller, body["user"])
    expires = datetime.now(UTC) + timedelta(days=days) if days is not None else None
    token, record = store.create_token(owner.user_name, expires_at=expires, label=label)
    out = {"secret": token.secret, "prefix": record.prefix, "user": owner.user_name, "label": label}
    out["expires_at"] = expires.isoformat() if expires else None
    return jsonify(out), 201


@bp.delete("/tokens/<prefix>")
@describe(tag="team", responses={204: "Revoked", 403: "Not a team admin", 404: "No such active token"})
def revoke_token(prefix: str) -> tuple[str, int]:
    """Revoke a token of the caller's team by the prefix it was shown with."""
    caller = _manager()
    store = services().store
    owner = store.token_owner(prefix) if len(prefix) <= 16 else None
    if owner is None or (caller.scope is not None and owner.team_id != caller.scope):
        raise NotFound("token", prefix)
    store.revoke_token(prefix)
    return "", 204


def _team_user(caller: Principal, name: str) -> Principal:
    try:
        user = services().store.find_user(name)
    except NotFound:
        raise InvalidInput.one("user", f"no user {name!r} in your team") from None
    if caller.scope is not None and user.team_id != caller.scope:
        raise InvalidInput.one("user", f"no user {name!r} in your team")  # another team's users do not exist here
    return user
