"""The shared queue as a team sees it: running trials and waiting studies with position, reason and ETA."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from tuner_service.api import services
from tuner_service.api.auth import scope
from tuner_service.api.openapi import describe
from tuner_service.api.params import choice_arg
from tuner_service.queue import POOLS, READY, TeamLoad, blocked_reason, order

bp = Blueprint("queue", __name__, url_prefix="/api/v1/queue")


@bp.get("")
@describe(
    tag="queue", query={"pool": "cpu|gpu"}, responses={200: "Running trials and waiting studies"}, returns="QueueOut"
)
def index() -> Response:
    """Running trials (study, team, worker, GPU, elapsed) and waiting studies in the order the scheduler
    serves them, each with its position, why it waits (quota, parallelism, paused) and an ETA estimated
    from measured trial times and the number of active workers."""
    svc = services()
    only = choice_arg("pool", POOLS)
    team = scope()
    waiting: list[dict[str, Any]] = []
    for pool in [only] if only else list(POOLS):
        waiting.extend(waiting_studies(pool, team))
    loads = svc.store.queue_snapshot(None, svc.settings.fair_share_window_s)[1]
    teams = [team_json(load) for key, load in loads.items() if key is not None and (team is None or key == team)]
    running = [r for r in svc.store.running_trials(team) if only is None or r["pool"] == only]
    return jsonify({"running": running, "waiting": waiting, "teams": teams})


def waiting_studies(pool: str, team: int | None) -> list[dict[str, Any]]:
    svc = services()
    studies, loads = svc.store.queue_snapshot(pool, svc.settings.fair_share_window_s)
    mean = svc.store.mean_trial_seconds(pool)
    workers = max(1, svc.store.active_workers(pool))
    out, ahead = [], 0
    for position, study in enumerate(order([s for s in studies if s.owed > 0], loads), start=1):
        load = loads.get(study.team_id) or TeamLoad(study.team_id, "-")
        reason = blocked_reason(study, load) or _hypermodel_reason(pool, study.study_id)
        if team is None or study.team_id == team:
            out.append(
                {
                    "position": position,
                    "study_id": study.study_id,
                    "name": study.name,
                    "team": load.name,
                    "pool": pool,
                    "priority": study.priority,
                    "status": study.status,
                    "running": study.running,
                    "parallelism": study.parallelism,
                    "trials_left": study.owed,
                    "blocked_reason": reason,
                    "waiting_because": reason or READY,
                    "eta_next_start_s": round(ahead * mean / workers, 1) if mean is not None else None,
                    "eta_done_s": round((ahead + study.owed) * mean / workers, 1) if mean is not None else None,
                }
            )
        if reason is None:
            ahead += study.owed
    return out


def _hypermodel_reason(pool: str, study_id: int) -> str | None:
    """A study whose hypermodel no live worker of its pool offers waits for one (it was announced before)."""
    from tuner_service.hypermodels.registry import model_ref
    from tuner_service.hypermodels.validate import offered_live

    svc = services()
    name = model_ref(svc.store.get_study(study_id).spec).hypermodel
    if offered_live(svc.store, svc.settings, pool, name):
        return None
    return f"waiting for a live worker of pool {pool!r} that offers hypermodel {name!r}"


def team_json(load: TeamLoad) -> dict[str, Any]:
    return {
        "team": load.name,
        "share_weight": load.share_weight,
        "recent_worker_s": round(load.usage_s, 1),
        "running": load.running,
        "max_concurrent_trials": load.max_concurrent_trials,
        "gpu_hours_today": round(load.gpu_hours_today, 3),
        "gpu_hours_per_day": load.gpu_hours_per_day,
    }
