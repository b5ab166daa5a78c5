"""One trial: every epoch (table and chart), final metrics, the error of a failed trial, retries, worker, GPU,
the environment it was trained in, and its reruns (same seed: does it reproduce? other seeds: how much does
the score spread?) with the form that starts one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Response, flash, jsonify, redirect, render_template, request, url_for

from tuner_service.api import services
from tuner_service.api.auth import scope
from tuner_service.api.jobs import DEFAULT_REPEATS, MAX_REPEATS, RERUNNABLE, start_rerun
from tuner_service.dashboard import charts
from tuner_service.dashboard.blueprint import bp, elapsed_s
from tuner_service.dashboard.session import caller
from tuner_service.errors import Conflict, InvalidInput
from tuner_service.store import JobRecord

# The recorded environment, in the order a person reads it (other keys follow).
ENVIRONMENT_KEYS = ("seed", "python", "numpy", "tensorflow", "keras", "keras_tuner", "backend", "device")


@dataclass(frozen=True)
class RerunRow:
    """One rerun of the trial, with what its result says once the worker is done."""

    job: JobRecord
    owner: str
    elapsed_s: float | None

    @property
    def result(self) -> dict[str, Any]:
        return self.job.result or {}

    @property
    def active(self) -> bool:
        return self.job.status in ("queued", "running")

    @property
    def other_seeds(self) -> list[dict[str, Any]]:
        return self.result.get("other_seeds") or []

    @property
    def environment_changes(self) -> list[str]:
        """Libraries, backend or device that differ between the original trial and the rerun."""
        before = (self.result.get("original") or {}).get("environment") or {}
        after = self.result.get("environment") or {}
        if not before or not after:
            return []
        return [
            f"{key} {before.get(key, '?')} → {after.get(key, '?')}"
            for key in sorted(set(before) | set(after))
            if key != "seed" and before.get(key) != after.get(key)
        ]


def environment_rows(environment: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if not environment:
        return []
    known = [(k, environment[k]) for k in ENVIRONMENT_KEYS if k in environment]
    return known + sorted((k, v) for k, v in environment.items() if k not in ENVIRONMENT_KEYS)


def _reruns(trial_id: int) -> list[RerunRow]:
    jobs = services().store.list_jobs(kind="rerun", trial_id=trial_id)
    owners = services().store.user_names(j.owner_id for j in jobs)
    return [
        RerunRow(
            j, owners.get(j.owner_id, "—") if j.owner_id is not None else "—", elapsed_s(j.started_at, j.finished_at)
        )
        for j in jobs
    ]


def _trial_view(study_id: int, number: int) -> dict[str, Any]:
    store = services().store
    study = store.get_study(study_id, team_id=scope())
    trial = store.trial_by_number(study.id, number)
    epochs = store.epochs(trial.id)
    metric_names = sorted({k for e in epochs for k in e.metrics})
    reruns = _reruns(trial.id)
    running = trial.status in ("running", "pending")
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
        "running": running,
        "environment": environment_rows(trial.environment),
        "reruns": reruns,
        "live": running or any(r.active for r in reruns),
        "can_rerun": caller().can_write and trial.status in RERUNNABLE,
        "max_repeats": MAX_REPEATS,
        "repeats": str(DEFAULT_REPEATS),
        "rerun_errors": {},
    }


@bp.get("/studies/<int:study_id>/trials/<int:number>")
def trial(study_id: int, number: int) -> str:
    return render_template("dashboard/trial.html", **_trial_view(study_id, number))


@bp.get("/studies/<int:study_id>/trials/<int:number>/live.json")
def trial_live(study_id: int, number: int) -> Response:
    view = _trial_view(study_id, number)
    html = {
        "trial-detail": render_template("dashboard/_trial_detail.html", **view),
        "trial-reruns": render_template("dashboard/_reruns.html", **view),
    }
    return jsonify({"html": html, "figures": view["figures"], "done": not view["live"]})


@bp.post("/studies/<int:study_id>/trials/<int:number>/rerun")
def rerun(study_id: int, number: int) -> Response | tuple[str, int]:
    """Retrain the trial once with its own seed and with ``repeats`` other seeds, as the API's rerun does."""
    typed = request.form.get("repeats", "").strip()
    repeats: object = int(typed) if typed.lstrip("-").isdigit() else typed
    try:
        job = start_rerun(services(), caller(), study_id, number, repeats)
    except InvalidInput as exc:
        view = _trial_view(study_id, number)
        errors: dict[str, list[str]] = {}
        for error in exc.errors:
            errors.setdefault("repeats", []).append(error.reason)
        view.update(repeats=typed, rerun_errors=errors)
        return render_template("dashboard/trial.html", **view), 422
    except Conflict as exc:
        flash(f"Not rerun: {exc}", "error")
    else:
        flash(f"Rerun #{job.id} queued: the trial is retrained with its own seed and {repeats} other(s).", "ok")
    return redirect(url_for("dashboard.trial", study_id=study_id, number=number, _anchor="reruns-heading"))
