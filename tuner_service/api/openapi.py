"""The OpenAPI 3 document, generated from the registered routes and their ``describe`` notes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from tuner_service.api.schemas import COMPONENTS

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")
F = Callable[..., Any]


def describe(
    *,
    tag: str,
    responses: dict[int, str],
    query: dict[str, str] | None = None,
    body: str | None = None,
) -> Callable[[F], F]:
    """Attach what the OpenAPI document needs beyond the route itself (its docstring is the summary)."""

    def mark(view: F) -> F:
        view.openapi = {"tag": tag, "responses": responses, "query": query or {}, "body": body}  # type: ignore[attr-defined]
        return view

    return mark


def build_document(app: Flask) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        note = getattr(view, "openapi", None)
        if note is None:
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule, view, note)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tuner-service",
            "version": "1",
            "description": "Hyperparameter search for Keras models: submit a search space, trials run on workers.",
        },
        "paths": paths,
        "components": COMPONENTS,
    }


def _operation(rule: Any, view: Any, note: dict[str, Any]) -> dict[str, Any]:
    # Docstrings wrap mid-sentence: the summary is the first sentence of the whole text, the description all of it.
    description = " ".join((view.__doc__ or "").split())
    summary = re.split(r"(?<=[.:;])\s", description, maxsplit=1)[0].rstrip(".:;")
    parameters = [
        {"name": arg, "in": "path", "required": True, "schema": {"type": "integer"}} for arg in sorted(rule.arguments)
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
        for name, text in note["query"].items()
    ]
    responses: dict[str, Any] = {}
    for status, text in note["responses"].items():
        if status >= 400:
            responses[str(status)] = {"$ref": "#/components/responses/Problem"} | {"description": text}
        else:
            responses[str(status)] = {"description": text}
    op: dict[str, Any] = {
        "operationId": rule.endpoint.replace(".", "_"),
        "summary": summary,
        "tags": [note["tag"]],
        "parameters": parameters,
        "responses": responses,
    }
    if description.rstrip(".") != summary:
        op["description"] = description
    body = note["body"]
    if body in COMPONENTS["schemas"] and body != "DatasetUpload":
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    elif body:
        op["requestBody"] = {
            "required": True,
            "description": body,
            "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/DatasetUpload"}}},
        }
    return op


@bp.get("/openapi.json")
@describe(tag="docs", responses={200: "This OpenAPI 3 document"})
def openapi_json() -> Response:
    """The OpenAPI 3 document of this API, generated from its routes."""
    return jsonify(build_document(current_app))


@bp.get("/docs")
@describe(tag="docs", responses={200: "An HTML page"})
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
