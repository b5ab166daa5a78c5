"""Which hyperparameters mattered: a random forest fitted on finished trials' hyperparameters against the
objective, read through its impurity-based (mean decrease in impurity) feature importances."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tuner_service.dashboard.charts import FONT
from tuner_service.dashboard.columns import Column, columns, finished
from tuner_service.store import TrialRecord

MIN_TRIALS = 4
TREES = 200
METHOD = (
    "random-forest impurity importance: scikit-learn's RandomForestRegressor (200 trees, random_state 0) "
    "fitted on the finished trials' hyperparameters (numbers as they are, log10 for log-sampled ranges, "
    "choices as ordinal codes, inactive values as a code of their own) against the objective; the "
    "importances are the mean decrease in impurity, normalised to sum to 1"
)


@dataclass(frozen=True)
class Importance:
    """Each hyperparameter's share of the forest's impurity decrease, largest first; or why there is none."""

    trials: int
    shares: tuple[tuple[str, float], ...] = ()
    note: str | None = None


def importance(trials: Sequence[TrialRecord], space: Mapping[str, Any]) -> Importance:
    done = finished(trials)
    if len(done) < MIN_TRIALS:
        return Importance(
            len(done), note=f"needs at least {MIN_TRIALS} finished trials to estimate; {len(done)} so far"
        )
    cols = columns(done, space)
    varying = [c for c in cols if not c.constant]
    scores = tuple(float(t.score) for t in done if t.score is not None)
    if not varying:
        return Importance(len(done), note="every finished trial used the same hyperparameters")
    if len(set(scores)) == 1:
        return Importance(len(done), note="every finished trial has the same score: nothing to attribute")
    fitted = _fit(tuple(_features(c) for c in varying), scores)
    shares = {c.name: share for c, share in zip(varying, fitted, strict=True)}
    shares.update({c.name: 0.0 for c in cols if c.constant})
    ranked = tuple(sorted(shares.items(), key=lambda item: (-item[1], item[0])))
    return Importance(len(done), ranked)


def _features(col: Column) -> tuple[float, ...]:
    """The column with inactive values (``None``) moved below every real value, where trees can split them off."""
    present = [v for v in col.values if v is not None]
    low = min(present) if present else 0.0
    spread = (max(present) - low) if present else 1.0
    missing = low - (spread or 1.0)
    return tuple(v if v is not None else missing for v in col.values)


@lru_cache(maxsize=128)
def _fit(features: tuple[tuple[float, ...], ...], scores: tuple[float, ...]) -> tuple[float, ...]:
    """Cached on the data itself: a polling page asks again every second while nothing changed."""
    import numpy as np
    from sklearn.ensemble import RandomForestRegressor

    x = np.array(features, dtype=float).T
    forest = RandomForestRegressor(n_estimators=TREES, random_state=0).fit(x, np.array(scores))
    return tuple(float(v) for v in forest.feature_importances_)


def importance_chart(result: Importance, objective: str) -> dict[str, Any]:
    names = [name for name, _ in reversed(result.shares)]
    values = [share for _, share in reversed(result.shares)]
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": values,
                "y": names,
                "marker": {"color": "#1f77b4"},
                "hovertemplate": "%{y}: %{x:.1%}<extra></extra>",
            }
        ],  # fmt: skip
        "layout": {
            "title": {"text": f"Hyperparameter importance for {objective}", "x": 0.01, "font": {"size": 15}},
            "font": {"family": FONT, "size": 12},
            "xaxis": {"title": {"text": "share of impurity decrease"}, "tickformat": ".0%", "rangemode": "tozero"},
            "yaxis": {"automargin": True},
            "margin": {"l": 20, "r": 20, "t": 44, "b": 48},
            "height": max(220, 60 + 28 * len(names)),
            "paper_bgcolor": "rgba(0,0,0,0)",
            "plot_bgcolor": "#fafafa",
        },
    }


def importance_label(result: Importance, objective: str) -> str:
    if not result.shares:
        return f"Hyperparameter importance for {objective}: {result.note}."
    parts = ", ".join(f"{name} {share:.0%}" for name, share in result.shares)
    return f"Bar chart of hyperparameter importance for {objective} over {result.trials} finished trials: {parts}."
