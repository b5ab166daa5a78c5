"""The leaderboard across studies: by data set, task and metric, paginated."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from tuner_service.api import services
from tuner_service.api.auth import scope
from tuner_service.api.openapi import describe
from tuner_service.api.params import choice_arg, id_arg, page_args
from tuner_service.catalog import find_dataset
from tuner_service.errors import NotFound
from tuner_service.store import Page

bp = Blueprint("leaderboard", __name__, url_prefix="/api/v1/leaderboard")
TASKS = ("regression", "binary", "multilabel", "multiclass")


@bp.get("")
@describe(
    tag="leaderboard",
    query={
        "dataset": {
            "description": "data set id, 'builtin:NAME' or 'sha256:HEX'",
            "schema": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[A-Za-z0-9_:]+$"},
        },
        "task": "regression|binary|multilabel|multiclass",
        "metric": "objective name, e.g. val_accuracy",
        "study": "study id",
        "limit": "1..500",
        "offset": ">= 0",
    },
    responses={200: "Completed trials best first", 400: "Bad filter", 422: "Unknown data set"},
    returns="LeaderboardPage",
)
def index() -> Response:
    """Completed trials across studies, best first. Without ``metric``, studies with different objectives
    are ranked together only when they share the metric, so name one to compare like with like."""
    store = services().store
    limit, offset = page_args(20)
    task = choice_arg("task", TASKS)
    metric = request.args.get("metric") or None
    study = id_arg("study")
    dataset_id = None
    if request.args.get("dataset"):
        ref = request.args["dataset"]
        ref = ref if ref.isdigit() or ":" in ref else f"builtin:{ref}"  # "²" is a digit: no data set has it
        info, _owner = find_dataset(store, ref, team_id=scope())
        try:
            dataset_id = store.get_dataset(info.key, team_id=scope()).id
        except NotFound:  # a built-in set no study has used yet: nothing to rank
            return jsonify(Page([], 0, limit, offset).to_json())
    page = store.leaderboard(
        team_id=scope(),
        study_id=study,
        dataset_id=dataset_id,
        task_type=task,
        objective_name=metric,
        limit=limit,
        offset=offset,
    )
    return jsonify(page.to_json())
