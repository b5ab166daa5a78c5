"""The OpenAPI 3.1 document, generated from the registered routes, their ``describe`` notes and the models
that validate request bodies (:mod:`tuner_service.contract`) and describe answers (``api/schemas.py``).

Every operation under ``/api/v1`` also lists the answers the edge gives any of them: 400 (a malformed query
or body), 401 (no or a bad token), 429 (too many bad tokens), 503 (the database does not answer); 404 where
the path names an object; 403, 413, 415 and 422 where a body is sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from werkzeug.routing import IntegerConverter

from tuner_service.api.schemas import REF, components
from tuner_service.contract import REQUEST_MODELS
from tuner_service.ids import MAX_ID

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")
F = Callable[..., Any]
PROTECTED = "/api/v1"

# Query parameters by name, typed once for every route that reads them (see api/params.py).
QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 500},
    "offset": {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
    "dataset": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "study": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "metric": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[A-Za-z0-9_]+$"},
}
_ENUM = re.compile(r"^[a-z_]+(\|[a-z_]+)+$")
GENERIC_ERRORS = {
    400: "A malformed query parameter or body",
    401: "No API token, or an unknown, revoked or expired one",
    429: "Too many failed tokens from this address",
    503: "The database does not answer",
}


def describe(
    *,
    tag: str,
    responses: dict[int, str],
    query: dict[str, str | dict[str, Any]] | None = None,
    body: str | None = None,
    returns: str | dict[str, Any] | None = None,
    links: dict[str, dict[str, Any]] | None = None,
) -> Callable[[F], F]:
    """Attach what the OpenAPI document needs beyond the route itself (its docstring is the summary).

    ``query`` maps a parameter to its description ("a|b|c" lists the values it takes) or to a schema;
    ``body`` names a request model; ``returns`` names the answer model of the 2xx status (or gives the
    content of a non-JSON answer); ``links`` are OpenAPI links from that answer to other operations.
    """

    def mark(view: F) -> F:
        view.openapi = {  # type: ignore[attr-defined]
            "tag": tag,
            "responses": responses,
            "query": query or {},
            "body": body,
            "returns": returns,
            "links": links or {},
        }
        return view

    return mark


def build_document(app: Flask) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        note = getattr(view, "openapi", None)
        if note is None:
            continue
        path = re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule, view, note, method)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tuner-service",
            "version": "1",
            "description": "Hyperparameter search for Keras models: submit a search space, trials run on workers. "
            "Errors are application/problem+json (RFC 9457) with an errors list naming each field.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": components(),
    }


def _operation(rule: Any, view: Any, note: dict[str, Any], method: str) -> dict[str, Any]:
    # Docstrings wrap mid-sentence: the summary is the first sentence of the whole text, the description all of it.
    description = " ".join((view.__doc__ or "").split())
    summary = re.split(r"(?<=[.:;])\s", description, maxsplit=1)[0].rstrip(".:;")
    parameters = [_path_parameter(rule, arg) for arg in sorted(rule.arguments)]
    parameters += [_query_parameter(name, spec) for name, spec in note["query"].items()]
    protected = rule.rule.startswith(PROTECTED)
    body = note["body"]
    codes: dict[int, str] = dict(note["responses"])
    if protected:
        for status, text in GENERIC_ERRORS.items():
            codes.setdefault(status, text)
        if rule.arguments:
            codes.setdefault(404, "No such object (or another team's)")
        if method in ("POST", "PATCH", "PUT", "DELETE"):
            codes.setdefault(403, "The caller's role may not do this")
        if body:
            codes.setdefault(413, "The body is over its size limit")
            codes.setdefault(415, "The body is not of the media type the route takes")
            codes.setdefault(422, "The body is well formed but invalid")
    responses = {str(status): _response(status, text, note, method) for status, text in sorted(codes.items())}
    op: dict[str, Any] = {
        "operationId": rule.endpoint.replace(".", "_"),
        "summary": summary,
        "tags": [note["tag"]],
        "parameters": parameters,
        "responses": responses,
    }
    if not protected:
        op["security"] = []
    if description.rstrip(".") != summary:
        op["description"] = description
    if body in REQUEST_MODELS:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=body)}}},
        }
    elif body:
        op["requestBody"] = {
            "required": True,
            "description": body,
            "content": {"multipart/form-data": {"schema": {"$ref": REF.format(model="DatasetUpload")}}},
        }
    return op


def _path_parameter(rule: Any, arg: str) -> dict[str, Any]:
    converter = rule._converters.get(arg)
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_]+$"}
    if isinstance(converter, IntegerConverter):
        schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    return {"name": arg, "in": "path", "required": True, "schema": schema}


def _query_parameter(name: str, spec: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(spec, dict):
        text, schema = spec.get("description", ""), spec["schema"]
    elif _ENUM.match(spec):
        text, schema = "", {"type": "string", "enum": spec.split("|")}
    else:
        text, schema = spec, QUERY_SCHEMAS.get(name, {"type": "string", "minLength": 1, "maxLength": 200})
    parameter: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if text:
        parameter["description"] = text
    return parameter


def _response(status: int, text: str, note: dict[str, Any], method: str) -> dict[str, Any]:
    if status >= 400:
        return {"$ref": "#/components/responses/Problem"} | {"description": text}
    out: dict[str, Any] = {"description": text}
    returns = note["returns"]
    if status == 204 or returns is None or status >= 300:
        return out
    if isinstance(returns, dict):
        out["content"] = returns
    else:
        out["content"] = {"application/json": {"schema": {"$ref": REF.format(model=returns)}}}
    if note["links"]:
        out["links"] = note["links"]
    return out


@bp.get("/openapi.json")
@describe(
    tag="docs",
    responses={200: "This OpenAPI 3.1 document"},
    returns={"application/json": {"schema": {"type": "object"}}},
)
def openapi_json() -> Response:
    """The OpenAPI 3 document of this API, generated from its routes."""
    return jsonify(build_document(current_app))


@bp.get("/docs")
@describe(tag="docs", responses={200: "An HTML page"}, returns={"text/html": {"schema": {"type": "string"}}})
def docs() -> Response:
    """A self-contained page listing every operation (no CDN: works offline)."""
    document = build_document(current_app)
    rows = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            codes = ", ".join(f"{code} {r.get('description', '')}" for code, r in op["responses"].items())
            params = ", ".join(p["name"] for p in op["parameters"] if p["in"] == "query")
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{path}</code></td>"
                f"<td>{_prose(op.get('description', op['summary']))}</td><td>{_esc(params)}</td>"
                f"<td>{_prose(codes)}</td></tr>"
            )
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>tuner-service API</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top}</style></head><body>"
        "<h1>tuner-service API</h1><p>Machine-readable: <a href='openapi.json'>openapi.json</a>. "
        "Errors are <code>application/problem+json</code> (RFC 9457) with an <code>errors</code> list naming "
        "each field.</p><table><tr><th>Method</th><th>Path</th><th>What</th><th>Query</th><th>Responses</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    return Response(html, mimetype="text/html")


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _prose(text: str) -> str:
    """Docstring text as HTML: ``code`` and `code` become <code>, never literal backquotes."""
    return re.sub(r"``?([^`]+?)``?", r"<code>\1</code>", _esc(text))
