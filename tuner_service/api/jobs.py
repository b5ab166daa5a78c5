"""Learning-rate range tests and reruns of a trial: work a worker runs outside a study's budget."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, url_for

from tuner_service.accounts import Principal
from tuner_service.api import Services, services
from tuner_service.api.auth import Forbidden, principal, require_write, scope
from tuner_service.api.openapi import describe
from tuner_service.api.params import json_body
from tuner_service.catalog import find_dataset, register_dataset
from tuner_service.contract import RangeTest, Rerun, check_document, contract_errors
from tuner_service.datasets import DatasetInfo, check_task, output_units
from tuner_service.errors import Conflict, FieldError, InvalidInput, NotFound
from tuner_service.lr_range import RangeTestSpec
from tuner_service.model_size import fixed_size, limits_for
from tuner_service.model_size import problems as size_problems
from tuner_service.store import JobRecord, StudyRecord, TrialRecord

bp = Blueprint("jobs", __name__, url_prefix="/api/v1")
MAX_REPEATS = 10
DEFAULT_REPEATS = 3
RERUNNABLE = ("completed", "pruned")


def _writer(caller: Principal) -> None:
    if not caller.can_write:
        raise Forbidden(f"user {caller.user_name} is a viewer and cannot change anything")


def start_range_test(svc: Services, caller: Principal, doc: object) -> JobRecord:
    """Validate a range-test document (the spec, then its data set as ``caller`` sees it and the task on it),
    store the test as queued in the caller's team and enqueue it. Shared by the API and the dashboard."""
    _writer(caller)
    check_document(doc)
    spec = RangeTestSpec.from_json(doc)
    broken = contract_errors(RangeTest, doc)
    if broken:
        raise InvalidInput(broken)
    info, owner = find_dataset(svc.store, spec.dataset, team_id=caller.scope)
    given = set(doc.get("architecture") or {}) if isinstance(doc, dict) else set()
    problems = check_task(info, spec.task.type) or range_test_size_problems(svc, spec, info, caller.team_id, given)
    if problems:
        raise InvalidInput(problems)
    dataset = register_dataset(svc.store, info, team_id=owner)
    job = svc.store.create_job(
        "lr_range_test", spec.to_json(), team_id=caller.team_id, owner_id=caller.user_id, dataset_id=dataset.id
    )
    svc.enqueue_job(job.pool, job.id)
    return job


def range_test_size_problems(
    svc: Services, spec: RangeTestSpec, info: DatasetInfo, team_id: int, given: set[str]
) -> list[FieldError]:
    """The range test's fixed model against the deployment's (or the team's lower) model-size limits."""
    size = fixed_size(
        spec.architecture,
        n_features=info.n_features,
        n_outputs=output_units(info, spec.task.type),
        wide_deep=spec.task.architecture == "wide_deep",
    )
    settings = svc.settings
    limits = limits_for(settings.max_model_params, settings.max_activation_bytes, svc.store.team_model_limit(team_id))
    return size_problems(size, limits, prefix="architecture.", given=given)


def repeats_errors(repeats: object) -> list[FieldError]:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
        return [FieldError("repeats", f"must be an integer between 1 and {MAX_REPEATS}")]
    return []


def rerun_target(svc: Services, caller: Principal, study_id: int, number: int) -> tuple[StudyRecord, TrialRecord]:
    """The study and its trial ``number`` to rerun as ``caller`` sees them: 404 for another team's, then 403 for a
    viewer."""
    study = svc.store.get_study(study_id, team_id=caller.scope)
    trial = svc.store.trial_by_number(study_id, number)
    _writer(caller)
    return study, trial


def start_rerun(svc: Services, caller: Principal, study_id: int, number: int, repeats: object) -> JobRecord:
    """Store a rerun of a finished trial as queued and enqueue it (404, 403, 422 on ``repeats``, then 409 for a
    trial that has not finished). Shared by the API and the dashboard."""
    study, trial = rerun_target(svc, caller, study_id, number)
    errors = repeats_errors(repeats)
    if errors:
        raise InvalidInput(errors)
    if trial.status not in RERUNNABLE:
        raise Conflict(f"trial {number} is {trial.status}; only a finished trial can be rerun")
    job = svc.store.create_job(
        "rerun",
        {"repeats": repeats},
        team_id=study.team_id,
        owner_id=caller.user_id,
        study_id=study_id,
        trial_id=trial.id,
        dataset_id=study.dataset_id,
        pool=study.pool,
    )
    svc.enqueue_job(job.pool, job.id)
    return job


@bp.post("/lr-range-tests")
@describe(
    tag="lr-range-tests",
    body="RangeTest",
    responses={202: "Queued; poll its Location", 403: "Viewer", 422: "Invalid range or data set"},
    returns="JobOut",
    links={"GetRangeTest": {"operationId": "jobs_show_range_test", "parameters": {"job_id": "$response.body#/id"}}},
)
def create_range_test() -> tuple[Response, int, dict[str, str]]:
    """Start a learning-rate range test: train a fixed architecture while raising the rate exponentially
    (default 1e-5 to 10 over 500 steps); the result is the loss curve and a suggested rate."""
    caller = require_write()
    job = start_range_test(services(), caller, json_body())
    return jsonify(job.to_json()), 202, {"Location": url_for("jobs.show_range_test", job_id=job.id)}


@bp.get("/lr-range-tests")
@describe(tag="lr-range-tests", responses={200: "The team's range tests, newest first"}, returns="JobList")
def list_range_tests() -> Response:
    """The caller's team's learning-rate range tests."""
    tests = services().store.list_jobs(kind="lr_range_test", team_id=scope())
    return jsonify({"items": [t.to_json() for t in tests], "total": len(tests)})


@bp.get("/lr-range-tests/<int:job_id>")
@describe(
    tag="lr-range-tests",
    responses={200: "Status, progress and, when done, curve and suggestion", 404: "No such test"},
    returns="JobOut",
)
def show_range_test(job_id: int) -> Response:
    """One range test: its status and progress, and once completed the loss-against-rate curve and the
    suggested rate (a bit below where the loss starts to climb; also half the rate at which it diverges)."""
    return jsonify(services().store.get_job(job_id, kind="lr_range_test", team_id=scope()).to_json())


@bp.post("/studies/<int:study_id>/trials/<int:number>/rerun")
@describe(
    tag="trials",
    body="Rerun",
    responses={202: "Queued; poll its Location", 404: "No such trial", 409: "Trial not finished", 422: "Bad repeats"},
    returns="JobOut",
)
def create_rerun(study_id: int, number: int) -> tuple[Response, int, dict[str, str]]:
    """Retrain a finished trial's hyperparameters: once with its own seed (is it reproducible?) and with
    ``repeats`` other seeds (how much does the score spread?)."""
    svc = services()
    caller = principal()
    rerun_target(svc, caller, study_id, number)  # 404 and 403 before anything about the body
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidInput.one("body", "must be a JSON object")
    repeats = body.get("repeats", DEFAULT_REPEATS)
    unknown = [FieldError(k, "unknown field; known: repeats") for k in body if k != "repeats"]
    if unknown:
        raise InvalidInput(unknown + repeats_errors(repeats))
    if "repeats" in body and not repeats_errors(repeats) and contract_errors(Rerun, body):
        raise InvalidInput(contract_errors(Rerun, body))
    job = start_rerun(svc, caller, study_id, number, repeats)
    location = url_for("jobs.show_rerun", study_id=study_id, number=number, job_id=job.id)
    return jsonify(job.to_json()), 202, {"Location": location}


@bp.get("/studies/<int:study_id>/trials/<int:number>/reruns/<int:job_id>")
@describe(
    tag="trials",
    responses={200: "Status and, when done, the scores and their spread", 404: "No such rerun"},
    returns="JobOut",
)
def show_rerun(study_id: int, number: int, job_id: int) -> Response:
    """One rerun of a trial with the same-seed score, the other seeds' scores and their spread."""
    services().store.get_study(study_id, team_id=scope())
    trial = services().store.trial_by_number(study_id, number)
    job = services().store.get_job(job_id, kind="rerun", team_id=None)
    if job.trial_id != trial.id or job.study_id != study_id:
        raise NotFound("rerun", job_id)
    return jsonify(job.to_json())
