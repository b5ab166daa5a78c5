"""A study's hypermodel checked against what the workers announced, before anything is stored (no TensorFlow)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuner_service.errors import FieldError, InvalidInput
from tuner_service.hypermodels.registry import BUILTIN_MLP, MLP_DECLARED_SPACE, ModelRef, data_kind, resolve_space

if TYPE_CHECKING:
    from tuner_service.config import Settings
    from tuner_service.datasets import DatasetInfo
    from tuner_service.store import HypermodelOffer, Store


def live_window_s(settings: Settings) -> float:
    """How recently a worker must have announced itself to count as live: three missed announcements."""
    return 3 * settings.announce_every_s


def resolve_study_model(store: Store, settings: Settings, doc: object) -> tuple[object, HypermodelOffer | None]:
    """``doc`` with its search space resolved against its hypermodel's declared parameters, and the offer.

    A hypermodel no worker of the study's pool ever announced is a 422 on ``model.hypermodel``; one
    announced only by workers that are gone now is accepted, and the study waits in the queue with that
    reason until such a worker is back. The built-in MLP is always known.
    """
    if not isinstance(doc, dict) or "model" not in doc:
        return doc, None
    errors: list[FieldError] = []
    ref = ModelRef.from_json(doc["model"], errors)
    if errors:
        raise InvalidInput(errors)
    if ref.hypermodel == BUILTIN_MLP:
        return (doc if "search_space" in doc else {**doc, "search_space": MLP_DECLARED_SPACE}), None
    pool = _pool_of(doc)
    offers = store.hypermodel_offers(live_within_s=live_window_s(settings), pool=pool)
    matching = [o for o in offers if o.name == ref.hypermodel and o.error is None]
    if not matching:
        known = sorted({o.name for o in offers if o.error is None} | {BUILTIN_MLP})
        raise InvalidInput.one(
            "model.hypermodel",
            f"no worker of pool {pool!r} offers hypermodel {ref.hypermodel!r}; offered: {', '.join(known)}",
        )
    offer = max(matching, key=lambda o: (o.live, o.last_seen_at))
    space = resolve_space(
        offer.search_space,
        doc.get("search_space"),
        tune_new_entries=ref.tune_new_entries,
        hypermodel=ref.hypermodel,
        max_parameters=settings.max_parameters,
    )
    return {**doc, "search_space": space.to_json()}, offer


def input_kind_problems(offer: HypermodelOffer | None, info: DatasetInfo) -> list[FieldError]:
    """The data set must be of a kind (vectors or images) the hypermodel builds for."""
    if offer is None:
        return []
    kind = data_kind(info.image_shape)
    if kind in offer.input_kinds:
        return []
    takes = " or ".join(offer.input_kinds) or "nothing"
    return [FieldError("dataset", f"hypermodel {offer.name!r} takes {takes}; data set {info.name!r} holds {kind}")]


def offered_live(store: Store, settings: Settings, pool: str, name: str) -> bool:
    """Whether a live worker of ``pool`` offers ``name`` now (the built-in MLP: any worker does)."""
    if name == BUILTIN_MLP:
        return True
    return any(
        o.live and o.name == name and o.error is None
        for o in store.hypermodel_offers(live_within_s=live_window_s(settings), pool=pool)
    )


def _pool_of(doc: dict[str, Any]) -> str:
    resources = doc.get("resources")
    return "gpu" if isinstance(resources, dict) and resources.get("gpu") else "cpu"
