"""The shared queue as the caller's team sees it, through the REST API's own queue logic."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, render_template

from tuner_service.api import services
from tuner_service.api.auth import scope
from tuner_service.api.queue import team_json, waiting_studies
from tuner_service.dashboard.blueprint import bp
from tuner_service.queue import POOLS


def _queue_view() -> dict[str, Any]:
    svc = services()
    team = scope()
    waiting = [row for pool in POOLS for row in waiting_studies(pool, team)]
    loads = svc.store.queue_snapshot(None, svc.settings.fair_share_window_s)[1]
    teams = [team_json(load) for key, load in loads.items() if key is not None and (team is None or key == team)]
    running = svc.store.running_trials(team)
    workers: dict[str, list[dict[str, Any]]] = {}
    for row in running:
        workers.setdefault(f"{row['worker'] or '?'}{_gpu_label(row)}", []).append(row)
    return {"running": running, "workers": workers, "waiting": waiting, "teams": teams}


def _gpu_label(row: dict[str, Any]) -> str:
    """`` · GPU 0``, with the slots its trial takes when more than one."""
    if not row["gpu"]:
        return ""
    slots = row.get("gpu_slots") or 1
    return f" · GPU {row['gpu']}" + (f" ({slots} slots)" if slots > 1 else "")


@bp.get("/queue")
def queue() -> str:
    """Running trials grouped by worker and GPU; waiting studies with their position, reason and ETA."""
    return render_template("dashboard/queue.html", **_queue_view())


@bp.get("/queue/live.json")
def queue_live() -> Response:
    html = {"queue-tables": render_template("dashboard/_queue_tables.html", **_queue_view())}
    return jsonify({"html": html, "figures": {}, "done": False})
