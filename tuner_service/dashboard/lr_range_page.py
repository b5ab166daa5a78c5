"""Learning-rate range tests: the team's list, a form that starts one (the API's own validation and
submission), and one test's page, live while a worker runs it, then with its loss-against-rate chart and
the suggested rate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Response, jsonify, redirect, render_template, request, url_for

from tuner_service.api import services
from tuner_service.api.auth import require_write, scope
from tuner_service.api.jobs import start_range_test
from tuner_service.dashboard import charts
from tuner_service.dashboard.blueprint import bp, elapsed_s
from tuner_service.dashboard.new_study_page import dataset_choices
from tuner_service.dashboard.range_test_form import RangeTestForm
from tuner_service.dashboard.session import caller
from tuner_service.errors import InvalidInput, NotFound
from tuner_service.lr_range import RangeTestSpec
from tuner_service.space import KNOWN_ACTIVATIONS, KNOWN_OPTIMIZERS
from tuner_service.store import JobRecord
from tuner_service.task import TASK_TYPES

KIND = "lr_range_test"
ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class RangeTestRow:
    """One line of the list of range tests."""

    job: JobRecord
    dataset: str
    owner: str
    elapsed_s: float | None

    @property
    def suggestion(self) -> dict[str, Any]:
        return (self.job.result or {}).get("suggestion") or {}


def is_active(job: JobRecord) -> bool:
    return job.status in ACTIVE


def _dataset_names(jobs: list[JobRecord]) -> dict[int, str]:
    """Names of the jobs' data sets (each job was checked against its team's data sets when it was made)."""
    store = services().store
    names: dict[int, str] = {}
    for dataset_id in {j.dataset_id for j in jobs if j.dataset_id is not None}:
        try:
            names[dataset_id] = store.get_dataset(dataset_id).name
        except NotFound:
            names[dataset_id] = f"#{dataset_id} (deleted)"
    return names


def _rows(jobs: list[JobRecord]) -> list[RangeTestRow]:
    datasets = _dataset_names(jobs)
    owners = services().store.user_names(j.owner_id for j in jobs)
    return [
        RangeTestRow(
            job=j,
            dataset=datasets.get(j.dataset_id, "—") if j.dataset_id is not None else "—",
            owner=owners.get(j.owner_id, "—") if j.owner_id is not None else "—",
            elapsed_s=elapsed_s(j.started_at, j.finished_at),
        )
        for j in jobs
    ]


# -- the list and the form --------------------------------------------------------------------------------
def _list_view() -> dict[str, Any]:
    jobs = services().store.list_jobs(kind=KIND, team_id=scope())
    return {"rows": _rows(jobs), "active": any(is_active(j) for j in jobs)}


def _render_list(form: RangeTestForm, status: int = 200) -> tuple[str, int]:
    page = render_template(
        "dashboard/lr_range_tests.html",
        form=form,
        datasets=dataset_choices(),
        task_types=TASK_TYPES,
        activations=sorted(KNOWN_ACTIVATIONS),
        optimizers=sorted(KNOWN_OPTIMIZERS),
        **_list_view(),
    )
    return page, status


@bp.get("/lr-range-tests")
def range_tests() -> tuple[str, int]:
    """The team's range tests, newest first, and (for members and admins) the form that starts one."""
    return _render_list(RangeTestForm.blank())


@bp.post("/lr-range-tests")
def create_range_test() -> Response | tuple[str, int]:
    who = require_write()
    form = RangeTestForm.posted(request.form)
    doc, problems = form.document()
    try:
        if problems:
            # Nothing is started, but every other field is still checked, so all errors show at once.
            form.add(problems)
            RangeTestSpec.from_json(doc)
            return _render_list(form, 422)
        job = start_range_test(services(), who, doc)
    except InvalidInput as exc:
        form.add(exc.errors)
        return _render_list(form, 422)
    return redirect(url_for("dashboard.range_test", job_id=job.id))


@bp.get("/lr-range-tests/live.json")
def range_tests_live() -> Response:
    """The list's rows re-rendered, so that progress bars move and suggestions appear by themselves."""
    view = _list_view()
    html = {"range-test-rows": render_template("dashboard/_range_test_rows.html", **view)}
    return jsonify({"html": html, "figures": {}, "done": not view["active"]})


# -- one range test -----------------------------------------------------------------------------------------
def _test_view(job_id: int) -> dict[str, Any]:
    job = services().store.get_job(job_id, kind=KIND, team_id=scope())  # another team's: 404
    [row] = _rows([job])
    result = job.result or {}
    completed = job.status == "completed" and bool(result.get("curve"))
    chart = charts.lr_range_curve(result, job.spec) if completed else None
    study_doc = {"learning_rate_from": {"lr_range_test": job.id, "factor": 10}}
    return {
        "row": row,
        "job": job,
        "active": is_active(job),
        "completed": completed,
        "suggestion": row.suggestion,
        "steps_run": result.get("steps_run"),
        "architecture": job.spec.get("architecture", {}),
        "task": job.spec.get("task", {}),
        "figures": {"chart-lr": chart.to_json()} if chart else {},
        "study_json": json.dumps(study_doc),
        "can_write": caller().can_write,
    }


@bp.get("/lr-range-tests/<int:job_id>")
def range_test(job_id: int) -> str:
    return render_template("dashboard/lr_range_test.html", **_test_view(job_id))


@bp.get("/lr-range-tests/<int:job_id>/live.json")
def range_test_live(job_id: int) -> Response:
    """Status and progress while queued or running; the chart and the suggestion once completed."""
    view = _test_view(job_id)
    html = {
        "range-test-summary": render_template("dashboard/_range_test_summary.html", **view),
        "range-test-result": render_template("dashboard/_range_test_result.html", **view),
    }
    job = view["job"]
    return jsonify(
        {
            "html": html,
            "figures": view["figures"],
            "done": not view["active"],
            "status": job.status,
            "progress": job.progress,
            "suggestion": view["suggestion"] or None,
        }
    )
