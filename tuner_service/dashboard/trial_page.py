"""One trial: every epoch (table and chart), final metrics, the error of a failed trial, retries, worker, GPU."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, render_template

from tuner_service.api import services
from tuner_service.api.auth import scope
from tuner_service.dashboard import charts
from tuner_service.dashboard.blueprint import bp, elapsed_s


def _trial_view(study_id: int, trial_id: int) -> dict[str, Any]:
    store = services().store
    study = store.get_study(study_id, team_id=scope())
    trial = store.get_trial(study.id, trial_id)
    epochs = store.epochs(trial.id)
    metric_names = sorted({k for e in epochs for k in e.metrics})
    return {
        "study": study,
        "trial": trial,
        "epochs": epochs,
        "metric_names": metric_names,
        "executions": len({e.execution for e in epochs}),
        "elapsed": trial.duration_s if trial.duration_s is not None else elapsed_s(trial.started_at, None),
        "figures": {
            "chart-trial": charts.trial_curves(study, trial, [e for e in epochs if e.execution == 0]).to_json()
        },
        "running": trial.status in ("running", "pending"),
    }


@bp.get("/studies/<int:study_id>/trials/<int:trial_id>")
def trial(study_id: int, trial_id: int) -> str:
    return render_template("dashboard/trial.html", **_trial_view(study_id, trial_id))


@bp.get("/studies/<int:study_id>/trials/<int:trial_id>/live.json")
def trial_live(study_id: int, trial_id: int) -> Response:
    view = _trial_view(study_id, trial_id)
    html = {"trial-detail": render_template("dashboard/_trial_detail.html", **view)}
    return jsonify({"html": html, "figures": view["figures"], "done": not view["running"]})
