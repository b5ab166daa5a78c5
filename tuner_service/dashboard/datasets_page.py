"""Data sets: the built-in ones, the team's uploads, and an upload form (.npz or .csv with a target column)."""

from __future__ import annotations

from flask import Response, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from tuner_service.api import services
from tuner_service.api.auth import require_write, scope
from tuner_service.catalog import upload_dataset
from tuner_service.dashboard.blueprint import bp, error_page
from tuner_service.datasets import BUILTIN_NAMES, describe_builtin
from tuner_service.errors import InvalidInput


def _render(errors: dict[str, list[str]] | None = None, target: str = "", status: int = 200) -> tuple[str, int]:
    store = services().store
    uploads = [d for d in store.list_datasets(limit=500, team_id=scope()).items if d.source != "builtin"]
    builtins = [describe_builtin(name) for name in BUILTIN_NAMES]
    page = render_template(
        "dashboard/datasets.html",
        uploads=uploads,
        builtins=builtins,
        errors=errors or {},
        target=target,
        max_mb=services().settings.max_upload_bytes / 2**20,
    )
    return page, status


@bp.get("/datasets")
def datasets() -> tuple[str, int]:
    return _render()


@bp.post("/datasets")
def upload() -> Response | tuple[str, int]:
    caller = require_write()
    target = request.form.get("target_column", "").strip()
    file = request.files.get("file")
    if file is None or not file.filename:
        return _render({"file": ["choose a .npz or .csv file to upload"]}, target, 422)
    svc = services()
    try:
        record = upload_dataset(
            svc.store, svc.settings, file.stream, file.filename, target_column=target or None, team_id=caller.team_id
        )
    except InvalidInput as exc:
        errors: dict[str, list[str]] = {}
        for error in exc.errors:
            key = "target_column" if error.field.startswith("target_column") else "file"
            errors.setdefault(key, []).append(error.reason if key != "file" else f"{error.field}: {error.reason}")
        return _render(errors, target, exc.status)
    flash(f"Stored {record.name} as {record.key}; a study can name it as its data set.", "ok")
    return redirect(url_for("dashboard.datasets"))


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(exc: RequestEntityTooLarge) -> tuple[Response | str, int]:
    """A body over the app's limit is refused before any view runs; say so next to the file field."""
    if request.endpoint != "dashboard.upload":
        return error_page(413, exc.name, exc.description or exc.name)
    limit = services().settings.max_upload_bytes / 2**20
    return _render({"file": [f"the file is over the upload limit of {limit:.0f} MiB"]}, status=413)
