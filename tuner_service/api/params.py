"""Parsing of query parameters and JSON bodies with errors that name the parameter."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Flask, request
from werkzeug.routing import IntegerConverter

from tuner_service.contract import MAX_JSON_DEPTH, check_document, printable
from tuner_service.errors import FieldError, InvalidInput, NotFound
from tuner_service.ids import MAX_ID, is_id, is_trial_number

UPLOAD_ENDPOINTS = frozenset({"datasets.upload", "dashboard.upload"})
_INTEGER = re.compile(r"-?[0-9]{1,18}")


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
        doc = json.loads(raw) if raw.strip() else _raise_empty()
    except ValueError as exc:  # JSONDecodeError and undecodable bytes alike
        raise BadRequest.one("body", f"is not valid JSON ({exc})") from None
    except RecursionError:
        raise BadRequest.one("body", f"is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    check_document(doc)
    return doc


def _raise_empty() -> None:
    raise BadRequest.one("body", "is empty; send a JSON document")


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):  # int() would also take "1_0", " 1" and Unicode digits
        raise BadRequest.one(name, f"must be an integer, got {raw!r}")
    value = int(raw)
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


def id_arg(name: str) -> int | None:
    """An optional query parameter naming a row id (1 .. MAX_ID)."""
    return int_arg(name, 0, 1, MAX_ID) if name in request.args else None


class IdConverter(IntegerConverter):
    """``<int:...>`` in every route: ASCII digits only (``\\d`` would also match other scripts' digits)."""

    regex = r"[0-9]+"


def install(app: Flask) -> None:
    """Route and query checks that hold for every route, before any view runs (after authentication)."""
    app.url_map.converters["int"] = IdConverter

    @app.before_request
    def _body_limit() -> None:
        # Uploads stream to disk and may be large; everything else is parsed in memory and stays small.
        settings = app.extensions["tuner"].settings
        upload = request.endpoint in UPLOAD_ENDPOINTS
        request.max_content_length = (settings.max_upload_bytes + 1024 * 1024) if upload else settings.max_body_bytes

    @app.before_request
    def _check_request() -> None:
        for name, value in (request.view_args or {}).items():
            valid = is_trial_number(value) if name == "number" else is_id(value)
            if isinstance(value, int) and not valid:
                # No row has this id; the database must not even be asked (it would overflow).
                raise NotFound("trial" if name == "number" else name.removesuffix("_id"), value, field=name)
        for name, value in request.args.items(multi=True):
            if "\x00" in value or "\x00" in name:
                raise BadRequest.one(printable(name), "contains a NUL character (%00), which cannot be stored")
        _check_query_names()


def _check_query_names() -> None:
    """A documented route takes only the query parameters its document lists: a misspelt filter
    (``?stauts=running``) is an error, not a silently unfiltered answer."""
    from flask import current_app

    view = current_app.view_functions.get(request.endpoint or "")
    note = getattr(view, "openapi", None)
    if note is None or not request.path.startswith("/api/v1"):
        return
    known = set(note["query"])
    unknown = sorted({name for name in request.args if name not in known})
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise BadRequest([FieldError(printable(name), f"unknown query parameter; known: {listed}") for name in unknown])
