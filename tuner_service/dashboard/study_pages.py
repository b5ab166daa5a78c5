"""The studies list and one study's page (leaderboard, curves, importance, best hyperparameters), their
live JSON, the control buttons (cancel, pause, resume, priority) and the best model's download."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Response, flash, jsonify, redirect, render_template, request, url_for

from tuner_service.api import services
from tuner_service.api.auth import require_write, scope
from tuner_service.api.studies import model_response, progress
from tuner_service.dashboard import charts
from tuner_service.dashboard.blueprint import bp, elapsed_s
from tuner_service.dashboard.columns import parameter_names
from tuner_service.dashboard.importance import METHOD, importance, importance_chart, importance_label
from tuner_service.dashboard.session import caller
from tuner_service.dashboard.snippet import hypermodel_snippet, keras_tuner_snippet
from tuner_service.datasets import DatasetInfo, output_units
from tuner_service.errors import Conflict, NotFound
from tuner_service.store import STUDY_STATUSES, StudyRecord, TrialRecord
from tuner_service.study import PRIORITIES

MAX_TRIALS_SHOWN = 1000
STUDIES_PER_PAGE = 50


@dataclass(frozen=True)
class StudyRow:
    """One line of the studies list."""

    study: StudyRecord
    progress: dict[str, Any]
    owner: str
    team: str
    dataset: str
    elapsed_s: float | None


# -- the studies list -------------------------------------------------------------------------------
@bp.get("/")
def studies() -> str:
    """Every study of the caller's team (an admin: of every team), newest first, filtered."""
    store = services().store
    status = request.args.get("status") or None
    status = status if status in STUDY_STATUSES else None
    dataset = request.args.get("dataset", "")
    dataset_id = int(dataset) if dataset.isdigit() else None
    page = max(1, request.args.get("page", 1, type=int) or 1)
    found = store.list_studies(
        status=status,
        dataset_id=dataset_id,
        team_id=scope(),
        limit=STUDIES_PER_PAGE,
        offset=(page - 1) * STUDIES_PER_PAGE,
    )
    datasets = {d.id: d for d in store.list_datasets(limit=500, team_id=scope()).items}
    return render_template(
        "dashboard/studies.html",
        rows=_rows(found.items, datasets),
        total=found.total,
        page=page,
        pages=max(1, -(-found.total // STUDIES_PER_PAGE)),
        statuses=sorted(STUDY_STATUSES),
        datasets=sorted(datasets.values(), key=lambda d: d.name),
        status=status,
        dataset_id=dataset_id,
    )


def _rows(items: list[StudyRecord], datasets: dict[int, Any]) -> list[StudyRow]:
    store = services().store
    owners = store.user_names(s.owner_id for s in items)
    teams = {t.id: t.name for t in store.list_teams()}
    return [
        StudyRow(
            study=s,
            progress=progress(s),
            owner=owners.get(s.owner_id, "—") if s.owner_id else "—",
            team=teams.get(s.team_id, "—") if s.team_id else "—",
            dataset=datasets[s.dataset_id].name if s.dataset_id in datasets else str(s.dataset_id),
            elapsed_s=elapsed_s(s.started_at, s.finished_at),
        )
        for s in items
    ]


@bp.get("/studies/live.json")
def studies_live() -> Response:
    """The rows of the listed studies, re-rendered, for the list's progress bars to move by themselves."""
    store = services().store
    ids = [int(i) for i in request.args.get("ids", "").split(",") if i.isdigit()][:STUDIES_PER_PAGE]
    found = []
    for study_id in ids:
        try:
            found.append(store.get_study(study_id, team_id=scope()))
        except NotFound:
            continue
    datasets = {d.id: d for d in store.list_datasets(limit=500, team_id=scope()).items}
    html = {
        f"study-row-{row.study.id}": render_template("dashboard/_study_row.html", row=row)
        for row in _rows(found, datasets)
    }
    return jsonify({"html": html, "figures": {}, "done": all(s.is_terminal for s in found)})


# -- one study --------------------------------------------------------------------------------------
@bp.get("/studies/<int:study_id>")
def study(study_id: int) -> str:
    view = _study_view(study_id)
    return render_template("dashboard/study.html", **view)


@bp.get("/studies/<int:study_id>/live.json")
def study_live(study_id: int) -> Response:
    """The parts of the study page that change while it runs: HTML fragments and chart figures."""
    view = _study_view(study_id)
    html = {
        "study-summary": render_template("dashboard/_study_summary.html", **view),
        "trials-table-wrap": render_template("dashboard/_trials_table.html", **view),
        "importance": render_template("dashboard/_importance.html", **view),
        "best": render_template("dashboard/_best.html", **view),
    }
    return jsonify({"html": html, "figures": view["figures"], "done": view["study"].is_terminal})


def _study_view(study_id: int) -> dict[str, Any]:
    store = services().store
    record = store.get_study(study_id, team_id=scope())
    trials: list[TrialRecord] = store.list_trials(record.id, sort="number", limit=MAX_TRIALS_SHOWN).items
    # Only the trials whose curves are drawn: the page polls this every 1.5 s while the study runs.
    drawn = [t.id for t in trials if t.status != "pending"][-charts.MAX_CURVES :]
    epochs = store.study_epochs(record.id, trial_ids=drawn)
    space = record.spec.get("search_space", {})
    ranked = importance(trials, space)
    best = next((t for t in trials if t.id == record.best_trial_id), None)
    figures = {
        "chart-curves": charts.learning_curves(record, trials, epochs).to_json(),
        "chart-best": charts.best_so_far(record, trials).to_json(),
        "chart-parcoords": charts.parallel_coordinates(record, trials).to_json(),
        "chart-importance": {
            "figure": importance_chart(ranked, record.objective_name) if ranked.shares else None,
            "label": importance_label(ranked, record.objective_name),
        },
    }
    dataset = store.get_dataset(record.dataset_id)
    owner = store.user_names([record.owner_id]).get(record.owner_id or -1, "—")
    return {
        "study": record,
        "progress": progress(record),
        "elapsed": elapsed_s(record.started_at, record.finished_at),
        "owner": owner,
        "dataset": dataset,
        "trials": trials,
        "names": parameter_names(trials, space),
        "importance": ranked,
        "importance_method": METHOD,
        "best": best,
        "best_json": json.dumps(best.hyperparameters, indent=2) if best else None,
        "snippet": _snippet(record, best, dataset.info) if best else None,
        "figures": figures,
        "priorities": PRIORITIES,
        "can_write": caller().can_write,
    }


def _snippet(study: StudyRecord, best: TrialRecord, info: dict[str, Any]) -> str:
    task = study.spec.get("task", {})
    dataset = DatasetInfo.from_json(info)
    title = f"Best trial #{best.number} of study {study.id} ({study.name})"
    if best.score is not None:
        title += f": {study.objective_name} = {best.score:.4g}"
    model = study.spec.get("model") or {}
    if model.get("hypermodel", "mlp") != "mlp":
        return hypermodel_snippet(
            model,
            best.hyperparameters,
            input_shape=tuple(dataset.image_shape or (dataset.n_features,)),
            n_outputs=output_units(dataset, task.get("type", study.task_type)),
            title=title,
        )
    return keras_tuner_snippet(
        best.hyperparameters,
        task,
        n_features=dataset.n_features,
        n_outputs=output_units(dataset, task.get("type", study.task_type)),
        title=title,
    )


@bp.get("/studies/<int:study_id>/best-model")
def best_model(study_id: int) -> Response:
    """The best trial's ``.keras`` file, through the API's own logic, with the session's team scope."""
    study = services().store.get_study(study_id, team_id=scope())
    if study.best_trial_id is None:
        raise NotFound("best model of study", study_id)
    return model_response(study_id, services().store.get_trial(study_id, study.best_trial_id))


@bp.get("/studies/<int:study_id>/trials/<int:number>/model")
def trial_model(study_id: int, number: int) -> Response:
    services().store.get_study(study_id, team_id=scope())
    return model_response(study_id, services().store.trial_by_number(study_id, number))


# -- controls ---------------------------------------------------------------------------------------
def _writable(study_id: int) -> StudyRecord:
    study = services().store.get_study(study_id, team_id=scope())  # 404 before 403: ids reveal nothing
    require_write()
    return study


def _back(study_id: int) -> Response:
    return redirect(url_for("dashboard.study", study_id=study_id))


@bp.post("/studies/<int:study_id>/cancel")
def cancel(study_id: int) -> Response:
    _writable(study_id)
    try:
        services().store.cancel_study(study_id)
        flash("Study cancelled: no new trial starts; running ones stop at their next epoch end.", "ok")
    except Conflict as exc:
        flash(f"Not cancelled: {exc}", "error")
    return _back(study_id)


@bp.post("/studies/<int:study_id>/pause")
def pause(study_id: int) -> Response:
    _writable(study_id)
    try:
        services().store.control_study(study_id, action="pause")
        flash("Study paused: running trials finish, no new one starts until you resume it.", "ok")
    except Conflict as exc:
        flash(f"Not paused: {exc}", "error")
    return _back(study_id)


@bp.post("/studies/<int:study_id>/resume")
def resume(study_id: int) -> Response:
    _writable(study_id)
    svc = services()
    try:
        study = svc.store.control_study(study_id, action="resume")
    except Conflict as exc:
        flash(f"Not resumed: {exc}", "error")
        return _back(study_id)
    svc.enqueue(study.pool, study.parallelism)  # wake workers, as the API's resume does
    svc.store.mark_enqueued(study.id)
    flash("Study resumed; workers were woken for it.", "ok")
    return _back(study_id)


@bp.post("/studies/<int:study_id>/priority")
def priority(study_id: int) -> Response:
    _writable(study_id)
    wanted = request.form.get("priority", "")
    if wanted not in PRIORITIES:
        flash(f"Priority must be one of {', '.join(PRIORITIES)}.", "error")
        return _back(study_id)
    try:
        services().store.control_study(study_id, priority=wanted)
        flash(f"Priority set to {wanted}; it takes effect at the next claim.", "ok")
    except Conflict as exc:
        flash(f"Priority not changed: {exc}", "error")
    return _back(study_id)
