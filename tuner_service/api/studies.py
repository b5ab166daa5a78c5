"""Studies and their trials: submit, list, show with progress, cancel, trials with epoch curves, models."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file, url_for

from tuner_service.api import services
from tuner_service.api.auth import require_write, scope
from tuner_service.api.openapi import describe
from tuner_service.api.params import choice_arg, id_arg, json_body, page_args
from tuner_service.contract import StudyPatch, contract_errors
from tuner_service.errors import FieldError, InvalidHeader, InvalidInput, NotFound
from tuner_service.store import STUDY_STATUSES, TRIAL_SORTS, TRIAL_STATUSES, StudyRecord, TrialRecord
from tuner_service.study import PRIORITIES, budget_basis, submit

bp = Blueprint("studies", __name__, url_prefix="/api/v1/studies")
MODEL_FILE = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def progress(study: StudyRecord) -> dict[str, Any]:
    """Counts per trial status, the share of the budget done, and an ETA from measured trial times."""
    store = services().store
    counts = store.trial_counts(study.id)
    done = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled", "pruned"))
    budget = study.max_trials
    mean = store.mean_trial_duration(study.id)
    eta = None
    if mean is not None and not study.is_terminal:
        eta = round(mean * max(0, budget - done) / max(1, study.parallelism), 1)
    return {
        "budget": budget,
        "done": done,
        "percent": round(100.0 * done / budget, 1) if budget else 100.0,
        "trials": {status: counts.get(status, 0) for status in sorted(TRIAL_STATUSES)},
        "eta_s": eta,
    }


def study_json(study: StudyRecord, numbers: dict[int, int] | None = None) -> dict[str, Any]:
    """The study as the API shows it: ``max_trials`` is the trial budget (``budget_basis`` says where it comes
    from) and ``best_trial_number`` is the best trial's number in the study, as in trial URLs (``numbers``: those
    already looked up, by trial id)."""
    best = study.best_trial_id
    if numbers is None and best is not None:
        numbers = services().store.trial_numbers([best])
    return {
        **study.to_json(),
        "best_trial_number": (numbers or {}).get(best) if best is not None else None,
        "budget_basis": budget_basis(study.spec),
        "progress": progress(study),
        "links": _links(study.id),
    }


def _links(study_id: int) -> dict[str, str]:
    return {
        "self": url_for("studies.show", study_id=study_id),
        "trials": url_for("studies.trials", study_id=study_id),
        "leaderboard": url_for("studies.leaderboard", study_id=study_id),
        "best_model": url_for("studies.best_model", study_id=study_id),
    }


@bp.post("")
@describe(
    tag="studies",
    body="Study",
    responses={
        200: "A retry with an Idempotency-Key already used: the study the first request stored",
        201: "Study stored as queued and its first trials enqueued",
        202: "Study stored as queued; the broker is unavailable, so its trials are enqueued once it is back",
        400: "Malformed Idempotency-Key header",
        415: "Not JSON",
        422: "Invalid study",
    },
    returns="StudyOut",
    links={
        "GetStudy": {"operationId": "studies_show", "parameters": {"study_id": "$response.body#/id"}},
        "ListTrials": {"operationId": "studies_trials", "parameters": {"study_id": "$response.body#/id"}},
        "GetLeaderboard": {"operationId": "studies_leaderboard", "parameters": {"study_id": "$response.body#/id"}},
    },
)
def create() -> tuple[Response, int, dict[str, str]]:
    """Submit a study: the search space, task and budget are validated in full before anything is stored.

    Send an ``Idempotency-Key`` header (up to 128 printable characters) to make retries safe: a request that
    repeats a key the team already used returns that study (200) instead of storing a second one. With the
    broker unavailable the study is still stored and the answer is 202; the reaper enqueues it later.
    """
    svc = services()
    caller = require_write()
    key = idempotency_key()
    outcome = submit(
        svc.store,
        svc.settings,
        json_body(),
        svc.enqueue,
        team_id=caller.team_id,
        owner_id=caller.user_id,
        idempotency_key=key,
    )
    body = study_json(outcome.study)
    status = 200 if outcome.replayed else 201 if outcome.enqueued else 202
    if not outcome.enqueued:
        body["note"] = "the broker is unavailable: the study is stored and its trials are enqueued once it is back"
    headers = {"Location": url_for("studies.show", study_id=outcome.study.id)}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(body), status, headers


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key`` header, checked: 1-128 printable ASCII characters."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 128 or not all(32 < ord(c) < 127 for c in key):
        raise InvalidHeader.one("Idempotency-Key", "must be 1-128 printable ASCII characters without spaces")
    return key


@bp.get("")
@describe(
    tag="studies",
    query={
        "status": "|".join(sorted(STUDY_STATUSES)),
        "dataset": "data set id",
        "limit": "",
        "offset": "",
    },
    responses={200: "Studies, newest first"},
    returns="StudyPage",
)
def index() -> Response:
    """List studies, newest first, optionally filtered by status and data set."""
    limit, offset = page_args()
    status = choice_arg("status", STUDY_STATUSES)
    dataset = id_arg("dataset")
    page = services().store.list_studies(status=status, dataset_id=dataset, team_id=scope(), limit=limit, offset=offset)
    out = page.to_json()
    numbers = services().store.trial_numbers([s.best_trial_id for s in page.items if s.best_trial_id is not None])
    out["items"] = [study_json(s, numbers) for s in page.items]
    return jsonify(out)


@bp.get("/<int:study_id>")
@describe(tag="studies", responses={200: "The study with its progress", 404: "No such study"}, returns="StudyOut")
def show(study_id: int) -> Response:
    """One study with its status, progress (trials done / budget, ETA) and best score."""
    return jsonify(study_json(services().store.get_study(study_id, team_id=scope())))


def _writable(study_id: int) -> StudyRecord:
    """The caller's study, if it exists for the caller (404 otherwise) and the caller may write (403)."""
    study = services().store.get_study(study_id, team_id=scope())
    require_write()
    return study


@bp.post("/<int:study_id>/cancel")
@describe(
    tag="studies", responses={200: "Cancelled", 404: "No such study", 409: "Already finished"}, returns="StudyOut"
)
def cancel(study_id: int) -> Response:
    """Cancel a study: no new trials start, running ones stop at their next epoch end."""
    _writable(study_id)
    return jsonify(study_json(services().store.cancel_study(study_id)))


@bp.post("/<int:study_id>/pause")
@describe(
    tag="studies",
    responses={200: "Paused", 404: "No such study", 409: "Finished or already paused"},
    returns="StudyOut",
)
def pause(study_id: int) -> Response:
    """Pause a study: running trials finish, no new trial starts until it is resumed."""
    _writable(study_id)
    return jsonify(study_json(services().store.control_study(study_id, action="pause")))


@bp.post("/<int:study_id>/resume")
@describe(tag="studies", responses={200: "Resumed", 404: "No such study", 409: "Not paused"}, returns="StudyOut")
def resume(study_id: int) -> Response:
    """Resume a paused study; workers are woken for it."""
    _writable(study_id)
    svc = services()
    study = svc.store.control_study(study_id, action="resume")
    svc.enqueue(study.pool, study.parallelism)
    svc.store.mark_enqueued(study.id)
    return jsonify(study_json(study))


@bp.patch("/<int:study_id>")
@describe(
    tag="studies",
    body="StudyPatch",
    responses={200: "Changed", 404: "No such study", 409: "Already finished", 422: "Bad priority"},
    returns="StudyOut",
)
def patch(study_id: int) -> Response:
    """Change a study's priority (low, normal, high); it takes effect at the next claim."""
    _writable(study_id)
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidInput.one("body", "must be a JSON object")
    unknown = sorted(set(body) - {"priority"})
    if unknown:
        raise InvalidInput([FieldError(key, "cannot be changed; only priority can") for key in unknown])
    if body.get("priority") not in PRIORITIES:
        raise InvalidInput.one("priority", f"must be one of {', '.join(PRIORITIES)}")
    broken = contract_errors(StudyPatch, body)
    if broken:
        raise InvalidInput(broken)
    return jsonify(study_json(services().store.control_study(study_id, priority=body["priority"])))


@bp.get("/<int:study_id>/trials")
@describe(
    tag="trials",
    query={
        "status": "|".join(sorted(TRIAL_STATUSES)),
        "sort": "|".join(TRIAL_SORTS),
        "order": "asc|desc",
        "limit": "",
        "offset": "",
    },
    responses={200: "Trials of the study", 404: "No such study"},
    returns="TrialPage",
)
def trials(study_id: int) -> Response:
    """A study's trials, sorted (best score first by default) and filtered by status."""
    store = services().store
    store.get_study(study_id, team_id=scope())
    limit, offset = page_args()
    status = choice_arg("status", TRIAL_STATUSES)
    sort = choice_arg("sort", tuple(TRIAL_SORTS), "score") or "score"
    order = choice_arg("order", ("asc", "desc"), "asc")
    page = store.list_trials(study_id, status=status, sort=sort, descending=order == "desc", limit=limit, offset=offset)
    return jsonify(page.to_json())


@bp.get("/<int:study_id>/trials/<int:number>")
@describe(
    tag="trials",
    responses={200: "The trial with every epoch's metrics", 404: "No such study or trial"},
    returns="TrialDetail",
)
def trial(study_id: int, number: int) -> Response:
    """Trial ``number`` of the study (as on its leaderboard, counted from 0) with its hyperparameters, final
    metrics and its epoch curve (epochs and ``best_epoch`` counted from 1)."""
    store = services().store
    store.get_study(study_id, team_id=scope())
    record = store.trial_by_number(study_id, number)
    return jsonify({**record.to_json(), "epochs": [e.to_json() for e in store.epochs(record.id)]})


@bp.get("/<int:study_id>/leaderboard")
@describe(
    tag="leaderboard",
    query={"limit": "", "offset": ""},
    responses={200: "Finished trials, best first"},
    returns="LeaderboardPage",
)
def leaderboard(study_id: int) -> Response:
    """The study's completed trials ranked by its objective."""
    store = services().store
    store.get_study(study_id, team_id=scope())
    limit, offset = page_args(20)
    return jsonify(store.leaderboard(study_id=study_id, limit=limit, offset=offset).to_json())


@bp.get("/<int:study_id>/best-model")
@describe(
    tag="models", responses={200: "The best trial's model (.keras)", 404: "No finished trial yet"}, returns=MODEL_FILE
)
def best_model(study_id: int) -> Response:
    """Download the best trial's trained model as a ``.keras`` file."""
    study = services().store.get_study(study_id, team_id=scope())
    if study.best_trial_id is None:
        raise NotFound("best model of study", study_id)
    return model_response(study_id, services().store.get_trial(study_id, study.best_trial_id))


@bp.get("/<int:study_id>/trials/<int:number>/model")
@describe(
    tag="models", responses={200: "The trial's model (.keras)", 404: "No model for this trial"}, returns=MODEL_FILE
)
def trial_model(study_id: int, number: int) -> Response:
    """Download trial ``number``'s trained model as a ``.keras`` file."""
    services().store.get_study(study_id, team_id=scope())
    return model_response(study_id, services().store.trial_by_number(study_id, number))


def model_response(study_id: int, record: TrialRecord) -> Response:
    """The trial's ``.keras`` file as a download (the caller has checked that the study is visible)."""
    svc = services()
    path = (svc.settings.artifacts / record.model_path) if record.model_path else None
    if path is None or not path.is_file():
        raise NotFound("model of trial", record.number)
    name = f"study-{study_id}-trial-{record.number}.keras"
    return send_file(path, mimetype="application/octet-stream", as_attachment=True, download_name=name)
