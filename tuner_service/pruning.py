"""Stopping unpromising trials early by comparing them with the study's other trials (pure).

``median``: at epoch k (after the warm-up), stop a trial whose best-so-far is worse than the median of
the other trials' best-so-far at epoch k. ``asha``: at each rung (min_epochs · η^i epochs), keep a trial
only if it is in the top 1/η of the trials that reached that rung (successive halving, asynchronously).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

from tuner_service.errors import FieldError

PRUNERS = ("none", "median", "asha")


@dataclass(frozen=True)
class PrunerSpec:
    """Which pruner a study uses and its settings."""

    name: str = "none"
    warmup_epochs: int = 2
    min_trials: int = 3
    min_epochs: int = 1
    reduction_factor: int = 3

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: object, errors: list[FieldError], *, field: str = "pruner") -> PrunerSpec:
        if doc is None:
            return cls()
        if isinstance(doc, str):
            doc = {"name": doc}
        if not isinstance(doc, dict):
            errors.append(FieldError(field, f"must be a name or an object; one of {', '.join(PRUNERS)}"))
            return cls()
        name = doc.get("name", "none")
        if name not in PRUNERS:
            errors.append(FieldError(f"{field}.name", f"unknown pruner {name!r}; one of {', '.join(PRUNERS)}"))
            return cls()
        limits = {
            "warmup_epochs": (0, 1000),
            "min_trials": (1, 1000),
            "min_epochs": (1, 1000),
            "reduction_factor": (2, 10),
        }
        values: dict[str, int] = {}
        for key, value in doc.items():
            if key == "name":
                continue
            if key not in limits:
                errors.append(FieldError(f"{field}.{key}", f"unknown option; options: {', '.join(limits)}"))
            elif isinstance(value, bool) or not isinstance(value, int) or not limits[key][0] <= value <= limits[key][1]:
                low, high = limits[key]
                errors.append(FieldError(f"{field}.{key}", f"must be an integer between {low} and {high}"))
            else:
                values[key] = value
        return cls(name=name, **values)


def best_so_far(curve: list[float | None], direction: str) -> list[float | None]:
    """The running best of an objective curve (None where nothing finite was seen yet)."""
    out: list[float | None] = []
    best: float | None = None
    for value in curve:
        if value is not None and math.isfinite(value):
            better = best is None or (value > best if direction == "max" else value < best)
            best = value if better else best
        out.append(best)
    return out


def rungs(min_epochs: int, reduction_factor: int, up_to: int) -> list[int]:
    """Epoch counts at which successive halving compares trials: min_epochs · η^i, below ``up_to``."""
    out, epochs = [], min_epochs
    while epochs < up_to:
        out.append(epochs)
        epochs *= reduction_factor
    return out


def should_prune(
    spec: PrunerSpec, direction: str, mine: list[float | None], others: list[list[float | None]]
) -> str | None:
    """Why the trial whose objective so far is ``mine`` (one value per epoch) should stop now, or None.

    ``others`` are the objective curves of the study's other trials (finished or running).
    """
    epoch = len(mine)  # epochs completed
    if spec.name == "none" or epoch == 0:
        return None
    own = best_so_far(mine, direction)[-1]
    if own is None:
        return f"no finite objective after {epoch} epochs"
    peers = [best_so_far(curve, direction)[epoch - 1] for curve in others if len(curve) >= epoch]
    peers = [p for p in peers if p is not None]
    if spec.name == "median":
        if epoch <= spec.warmup_epochs or len(peers) < spec.min_trials:
            return None
        middle = median(peers)
        worse = own < middle if direction == "max" else own > middle
        if worse:
            return f"best {own:.4g} at epoch {epoch} is worse than the median {middle:.4g} of {len(peers)} other trials"
        return None
    # asha: only at rung boundaries, and only with enough trials at the rung to rank against
    if (
        epoch not in rungs(spec.min_epochs, spec.reduction_factor, up_to=10**9)
        or len(peers) + 1 < spec.reduction_factor
    ):
        return None
    ranked = sorted([*peers, own], reverse=direction == "max")
    keep = max(1, (len(peers) + 1) // spec.reduction_factor)
    position = ranked.index(own)
    if position >= keep:
        return (
            f"at rung {epoch} epochs, rank {position + 1} of {len(peers) + 1} is outside the top 1/"
            f"{spec.reduction_factor} ({keep} kept)"
        )
    return None
