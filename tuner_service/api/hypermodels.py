"""The hypermodels the workers announced: what a study can name in ``model.hypermodel``, per pool."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from tuner_service.api import services
from tuner_service.api.openapi import describe
from tuner_service.api.params import choice_arg
from tuner_service.hypermodels.registry import BUILTIN_MLP
from tuner_service.hypermodels.validate import live_window_s
from tuner_service.queue import POOLS
from tuner_service.store import HypermodelOffer

bp = Blueprint("hypermodels", __name__, url_prefix="/api/v1/hypermodels")


@bp.get("")
@describe(
    tag="hypermodels",
    query={"pool": "cpu|gpu"},
    responses={200: "Hypermodels offered per pool"},
    returns="HypermodelList",
)
def index() -> Response:
    """Every hypermodel a worker announced, one entry per pool and name: package, version, the search space
    its ``hp`` calls declare, the input kinds it accepts (vectors, images), whether a live worker offers it
    now, and the workers that announced it. A hypermodel that failed to load on a worker says why."""
    svc = services()
    only = choice_arg("pool", POOLS)
    offers = svc.store.hypermodel_offers(live_within_s=live_window_s(svc.settings), pool=only)
    grouped: dict[tuple[str, str], list[HypermodelOffer]] = {}
    for offer in offers:
        grouped.setdefault((offer.pool, offer.name), []).append(offer)
    items = [_entry(group) for _key, group in sorted(grouped.items(), key=lambda kv: (kv[0][0], kv[0][1]))]
    return jsonify({"items": items, "builtin": BUILTIN_MLP})


def _entry(group: list[HypermodelOffer]) -> dict[str, Any]:
    working = [o for o in group if o.error is None]
    best = max(working or group, key=lambda o: (o.live, o.last_seen_at))  # newest live announcement wins
    return {
        "name": best.name,
        "pool": best.pool,
        "package": best.package,
        "version": best.version,
        "target": best.target,
        "search_space": best.search_space,
        "input_kinds": list(best.input_kinds),
        "live": any(o.live for o in working),
        "error": None if working else best.error,
        "workers": [
            {"worker": o.worker, "live": o.live, "last_seen_at": o.last_seen_at.isoformat(), "version": o.version}
            for o in group
        ],
    }
