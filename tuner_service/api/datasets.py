"""Data sets: upload (.npz, .csv), list, show."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, url_for

from tuner_service.api import services
from tuner_service.api.auth import require_write, scope
from tuner_service.api.openapi import describe
from tuner_service.api.params import BadRequest, page_args
from tuner_service.catalog import upload_dataset
from tuner_service.datasets import BUILTIN_NAMES

bp = Blueprint("datasets", __name__, url_prefix="/api/v1/datasets")


@bp.post("")
@describe(
    tag="datasets",
    body="multipart/form-data: file (.npz with arrays x, y or .csv with a header), target_column (csv)",
    responses={
        201: "Stored (or already stored: same bytes, same data set)",
        413: "Over the size limit (as sent, or once decompressed or parsed)",
        422: "Bad file",
    },
    returns="DatasetOut",
    links={"GetDataset": {"operationId": "datasets_show", "parameters": {"dataset_id": "$response.body#/id"}}},
)
def upload() -> tuple[Response, int, dict[str, str]]:
    """Upload a data set file; it is stored by content hash and validated before anything is kept."""
    caller = require_write()
    file = request.files.get("file")
    if file is None or not file.filename:
        raise BadRequest.one("file", "attach the data set as a multipart form field named 'file'")
    target = request.form.get("target_column") or None
    record = upload_dataset(
        services().store, services().settings, file.stream, file.filename, target_column=target, team_id=caller.team_id
    )
    location = url_for("datasets.show", dataset_id=record.id)
    return jsonify(record.to_json()), 201, {"Location": location}


@bp.get("")
@describe(
    tag="datasets",
    query={"limit": "1..500", "offset": ">= 0"},
    responses={200: "Stored data sets"},
    returns="DatasetPage",
)
def index() -> Response:
    """List stored data sets, with the names of the built-in ones a study may use."""
    limit, offset = page_args()
    page = services().store.list_datasets(limit=limit, offset=offset, team_id=scope()).to_json()
    page["builtin"] = [f"builtin:{name}" for name in BUILTIN_NAMES]
    return jsonify(page)


@bp.get("/<int:dataset_id>")
@describe(tag="datasets", responses={200: "The data set", 404: "No such data set"}, returns="DatasetOut")
def show(dataset_id: int) -> Response:
    """One data set with its shape and target kind."""
    return jsonify(services().store.get_dataset(dataset_id, team_id=scope()).to_json())
