"""Parsing of query parameters and JSON bodies with errors that name the parameter."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from tuner_service.errors import FieldError, InvalidInput


class BadRequest(InvalidInput):
    """A malformed request part (query parameter, body) rather than an invalid resource."""

    status = 400
    title = "Bad request"


def json_body() -> Any:
    """The request's JSON document, or a 400/415 problem that says what is wrong with it."""
    if not request.is_json:
        exc = BadRequest.one("body", "send a JSON document with Content-Type: application/json")
        exc.status = 415
        raise exc
    raw = request.get_data(cache=True)
    try:
        return json.loads(raw) if raw.strip() else _raise_empty()
    except ValueError as exc:  # JSONDecodeError and undecodable bytes alike
        raise BadRequest.one("body", f"is not valid JSON ({exc})") from None


def _raise_empty() -> None:
    raise BadRequest.one("body", "is empty; send a JSON document")


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest.one(name, f"must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest.one(name, f"must be between {low} and {high}")
    return value


def choice_arg(name: str, choices: frozenset[str] | tuple[str, ...], default: str | None = None) -> str | None:
    raw = request.args.get(name, default)
    if raw is not None and raw not in choices:
        raise BadRequest([FieldError(name, f"must be one of {', '.join(sorted(choices))}, got {raw!r}")])
    return raw


def page_args(default_limit: int = 50) -> tuple[int, int]:
    return int_arg("limit", default_limit, 1, 500), int_arg("offset", 0, 0, 10**9)
