"""Submit a study from a form: the same validation and submission as ``POST /api/v1/studies``."""

from __future__ import annotations

from flask import Response, redirect, render_template, request, url_for

from tuner_service.api import services
from tuner_service.api.auth import require_write, scope
from tuner_service.dashboard.blueprint import bp
from tuner_service.dashboard.study_form import StudyForm
from tuner_service.datasets import BUILTIN_NAMES
from tuner_service.errors import InvalidInput
from tuner_service.study import ALGORITHMS, PRIORITIES, StudySpec, submit_study
from tuner_service.task import ARCHITECTURES, TASK_TYPES


def dataset_choices() -> list[tuple[str, str]]:
    """The data sets a form may name: the built-in ones, then the caller's team's uploads."""
    uploads = services().store.list_datasets(limit=500, team_id=scope()).items
    choices = [(f"builtin:{name}", f"{name} (built-in)") for name in BUILTIN_NAMES]
    choices += [(d.key, f"{d.name} ({d.key[:15]}…)") for d in uploads if d.source != "builtin"]
    return choices


def _render(form: StudyForm, status: int = 200) -> tuple[str, int]:
    page = render_template(
        "dashboard/new_study.html",
        form=form,
        datasets=dataset_choices(),
        task_types=TASK_TYPES,
        architectures=ARCHITECTURES,
        algorithms=ALGORITHMS,
        priorities=PRIORITIES,
    )
    return page, status


@bp.get("/studies/new")
def new_study() -> tuple[str, int]:
    require_write()
    return _render(StudyForm.blank())


@bp.post("/studies/new")
def create_study() -> Response | tuple[str, int]:
    caller = require_write()
    svc = services()
    form = StudyForm.posted(request.form)
    doc, problems = form.document()
    try:
        if problems:
            # Nothing is submitted, but every other field is still checked, so all errors show at once.
            form.add(problems)
            StudySpec.from_json(
                doc, max_parameters=svc.settings.max_parameters, max_trials_limit=svc.settings.max_trials_limit
            )
            return _render(form, 422)
        study = submit_study(svc.store, svc.settings, doc, svc.enqueue, team_id=caller.team_id, owner_id=caller.user_id)
    except InvalidInput as exc:
        form.add(exc.errors)
        return _render(form, 422)
    return redirect(url_for("dashboard.study", study_id=study.id))
