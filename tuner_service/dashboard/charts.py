"""Plotly figures (plain dicts, drawn by ``Plotly.react`` in the page) and the text alternative of each."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuner_service.dashboard.columns import columns, finished
from tuner_service.store import EpochRecord, StudyRecord, TrialRecord

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
MAX_CURVES = 40  # beyond this many trials the overlay is unreadable and slow; the most recent ones are drawn


@dataclass(frozen=True)
class Chart:
    """A figure and the sentence that describes it to someone who cannot see it."""

    figure: dict[str, Any]
    label: str

    def to_json(self) -> dict[str, Any]:
        return {"figure": self.figure, "label": self.label}


def _layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "font": {"family": FONT, "size": 12},
        "xaxis": {"title": {"text": x}, "zeroline": False},
        "yaxis": {"title": {"text": y}, "zeroline": False},
        "margin": {"l": 60, "r": 20, "t": 44, "b": 48},
        "height": 360,
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#fafafa",
        "hovermode": "closest",
        "legend": {"orientation": "v"},
        **extra,
    }


def training_metric(objective: str) -> str | None:
    """The training-set twin of a validation metric: ``val_accuracy`` -> ``accuracy``."""
    return objective.removeprefix("val_") if objective.startswith("val_") else None


def learning_curves(
    study: StudyRecord, trials: Sequence[TrialRecord], epochs: Mapping[int, list[EpochRecord]]
) -> Chart:
    """Validation (solid) and training (dotted) objective per epoch of each trial, overlaid; a star marks
    the epoch early stopping kept (the best one)."""
    metric = study.objective_name
    train = training_metric(metric)
    drawn = [t for t in sorted(trials, key=lambda t: t.number) if epochs.get(t.id)][-MAX_CURVES:]
    data: list[dict[str, Any]] = []
    best_x, best_y, best_text = [], [], []
    for trial in drawn:
        color = PALETTE[trial.number % len(PALETTE)]
        rows = epochs[trial.id]
        xs = [e.epoch + 1 for e in rows]
        group = f"trial {trial.number}"
        data.append(
            {
                "type": "scatter", "mode": "lines+markers", "x": xs, "y": [e.metrics.get(metric) for e in rows],
                "name": f"#{trial.number} {metric}", "legendgroup": group, "line": {"color": color, "width": 2},
                "marker": {"size": 5}, "hovertemplate": f"trial #{trial.number}<br>epoch %{{x}}<br>{metric} %{{y:.4g}}",
            }
        )  # fmt: skip
        if train and any(train in e.metrics for e in rows):
            data.append(
                {
                    "type": "scatter", "mode": "lines", "x": xs, "y": [e.metrics.get(train) for e in rows],
                    "name": f"#{trial.number} {train}", "legendgroup": group, "showlegend": False,
                    "line": {"color": color, "width": 1.5, "dash": "dot"},
                    "hovertemplate": f"trial #{trial.number}<br>epoch %{{x}}<br>{train} %{{y:.4g}}",
                }
            )  # fmt: skip
        if trial.best_epoch is not None:
            at = next((e for e in rows if e.epoch == trial.best_epoch), None)
            if at is not None and at.metrics.get(metric) is not None:
                best_x.append(at.epoch + 1)
                best_y.append(at.metrics[metric])
                best_text.append(f"trial #{trial.number}: best epoch {at.epoch + 1}")
    if best_x:
        data.append(
            {
                "type": "scatter", "mode": "markers", "x": best_x, "y": best_y, "text": best_text,
                "name": "best epoch (kept by early stopping)",
                "marker": {"symbol": "star", "size": 13, "color": "#111", "line": {"color": "#fff", "width": 1}},
                "hovertemplate": "%{text}<br>" + metric + " %{y:.4g}<extra></extra>",
            }
        )  # fmt: skip
    title = f"Learning curves: {metric} per epoch" + (f" (dotted: {train})" if train else "")
    label = (
        f"Line chart of {metric} per epoch for {len(drawn)} trial(s)"
        + (f", with the training {train} dotted" if train else "")
        + "; stars mark each trial's best epoch, the one early stopping kept."
    )
    if not drawn:
        label = f"Learning curves of {metric}: no trial has reported an epoch yet."
    return Chart({"data": data, "layout": _layout(title, "epoch", metric)}, label)


def best_so_far(study: StudyRecord, trials: Sequence[TrialRecord]) -> Chart:
    """Each finished trial's score, and the best score found up to it, against the trial number."""
    done = finished(trials)
    xs = [t.number for t in done]
    scores = [t.score for t in done]
    running: list[float] = []
    for s in scores:
        assert s is not None
        better = not running or (s > running[-1] if study.direction == "max" else s < running[-1])
        running.append(s if better else running[-1])
    metric = study.objective_name
    data = [
        {
            "type": "scatter", "mode": "markers", "x": xs, "y": scores, "name": f"trial {metric}",
            "marker": {"color": "#9aa5b1", "size": 8}, "hovertemplate": "trial #%{x}<br>%{y:.4g}<extra></extra>",
        },
        {
            "type": "scatter", "mode": "lines", "x": xs, "y": running, "name": "best so far",
            "line": {"color": "#1f77b4", "width": 3, "shape": "hv"},
            "hovertemplate": "after trial #%{x}<br>best %{y:.4g}<extra></extra>",
        },
    ]  # fmt: skip
    word = "highest" if study.direction == "max" else "lowest"
    if running:
        label = (
            f"Step chart of the best {metric} so far ({word} is best) against the trial number over "
            f"{len(done)} finished trial(s); it ends at {running[-1]:.4g}."
        )
    else:
        label = f"Best {metric} so far against the trial number: no trial has finished yet."
    layout = _layout(f"Best {metric} so far", "trial number", metric, height=300)
    layout["xaxis"]["dtick"] = 1 if len(xs) <= 20 else None
    return Chart({"data": data, "layout": layout}, label)


def parallel_coordinates(study: StudyRecord, trials: Sequence[TrialRecord]) -> Chart:
    """One vertical axis per hyperparameter and one for the objective; one line per finished trial,
    coloured by its score. Parameters inactive in some trials (conditional ones) are left out."""
    done = finished(trials)
    space = study.spec.get("search_space", {})
    kept = [c for c in columns(done, space) if c.complete]
    left_out = [c.name for c in columns(done, space) if not c.complete]
    metric = study.objective_name
    dimensions: list[dict[str, Any]] = []
    for col in kept:
        dim: dict[str, Any] = {"label": col.label, "values": list(col.values)}
        if col.categories:
            dim["tickvals"] = list(range(len(col.categories)))
            dim["ticktext"] = [html.escape(c) for c in col.categories]  # Plotly reads tick text as HTML
            dim["range"] = [-0.25, len(col.categories) - 0.75]
        dimensions.append(dim)
    scores = [t.score for t in done]
    dimensions.append({"label": metric, "values": scores})
    colorscale = "Viridis" if study.direction == "max" else "Viridis_r"
    data = (
        [
            {
                "type": "parcoords",
                "dimensions": dimensions,
                "line": {
                    "color": scores,
                    "colorscale": colorscale,
                    "showscale": True,
                    "colorbar": {"title": {"text": metric}},
                },
                "labelfont": {"size": 12},
                "tickfont": {"size": 11},
            }
        ]  # fmt: skip
        if done
        else []
    )
    layout = _layout(f"Hyperparameters against {metric}", "", "")
    layout["margin"] = {"l": 70, "r": 40, "t": 110, "b": 30}  # room for the title above the axis labels
    names = ", ".join(c.label for c in kept) or "no hyperparameter"
    label = (
        f"Parallel-coordinates plot of {len(done)} finished trial(s): one axis per hyperparameter ({names}) "
        f"and a last axis for {metric}; each line is a trial, coloured by its score."
    )
    if left_out:
        label += f" Left out because they are inactive in some trials: {', '.join(left_out)}."
    if not done:
        label = "Parallel-coordinates plot of hyperparameters against the objective: no trial has finished yet."
    return Chart({"data": data, "layout": layout}, label)


def trial_curves(study: StudyRecord, trial: TrialRecord, epochs: Sequence[EpochRecord]) -> Chart:
    """Every metric of one trial per epoch (losses on the right axis), with its best epoch marked."""
    names = sorted({k for e in epochs for k in e.metrics})
    data: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        is_loss = name.endswith("loss")
        data.append(
            {
                "type": "scatter", "mode": "lines+markers", "x": [e.epoch + 1 for e in epochs],
                "y": [e.metrics.get(name) for e in epochs], "name": name + (" (right axis)" if is_loss else ""),
                "yaxis": "y2" if is_loss else "y",
                "line": {"color": PALETTE[i % len(PALETTE)], "dash": "solid" if name.startswith("val_") else "dot"},
            }
        )  # fmt: skip
    layout = _layout(f"Trial #{trial.number}: metrics per epoch", "epoch", "metric")
    layout["yaxis2"] = {"title": {"text": "loss"}, "overlaying": "y", "side": "right", "zeroline": False}
    layout["margin"]["r"] = 60
    layout["legend"] = {"x": 1.08, "xanchor": "left"}  # clear of the right axis' tick labels
    if trial.best_epoch is not None:
        layout["shapes"] = [
            {"type": "line", "xref": "x", "yref": "paper", "x0": trial.best_epoch + 1, "x1": trial.best_epoch + 1,
             "y0": 0, "y1": 1, "line": {"color": "#111", "dash": "dash", "width": 1}}
        ]  # fmt: skip
        layout["annotations"] = [
            {"x": trial.best_epoch + 1, "y": 1, "xref": "x", "yref": "paper", "text": "best epoch",
             "showarrow": False, "yanchor": "bottom"}
        ]  # fmt: skip
    shown = ", ".join(names) or "no metric yet"
    label = f"Line chart of {shown} per epoch over {len(epochs)} epoch(s) of trial #{trial.number}"
    if trial.best_epoch is not None:
        label += f"; a dashed line marks the best epoch, {trial.best_epoch + 1}"
    return Chart({"data": data, "layout": layout}, label + ".")


def _finite(value: Any) -> float | None:
    """A number Plotly and ``JSON.parse`` can take: NaN and infinities (a diverged loss) become gaps."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _marker(x: float, name: str, color: str, dash: str) -> dict[str, Any]:
    """A vertical line at rate ``x`` across the whole plot height: a trace on a hidden 0..1 axis, so that
    it sits at the rate itself on the log axis and has its own legend entry and hover text."""
    return {
        "type": "scatter", "mode": "lines", "x": [x, x], "y": [0, 1], "yaxis": "y2", "name": name,
        "line": {"color": color, "dash": dash, "width": 2}, "hovertemplate": f"{name}<extra></extra>",
    }  # fmt: skip


def lr_range_curve(result: Mapping[str, Any], spec: Mapping[str, Any]) -> Chart:
    """A range test's loss per batch and its smoothed loss against the learning rate on a log axis, with
    vertical lines at the suggested rate and at the rate where the loss diverged."""
    curve = result.get("curve") or []
    suggestion = result.get("suggestion") or {}
    rates = [_finite(p.get("lr")) for p in curve]
    losses = [_finite(p.get("loss")) for p in curve]
    smoothed = [_finite(p.get("smoothed")) for p in curve]
    data: list[dict[str, Any]] = [
        {
            "type": "scatter", "mode": "lines", "x": rates, "y": losses, "name": "loss (each batch)",
            "line": {"color": "#9aa5b1", "width": 1}, "hovertemplate": "lr %{x:.3g}<br>loss %{y:.4g}<extra></extra>",
        },
        {
            "type": "scatter", "mode": "lines", "x": rates, "y": smoothed, "name": "smoothed loss",
            "line": {"color": PALETTE[0], "width": 3},
            "hovertemplate": "lr %{x:.3g}<br>smoothed loss %{y:.4g}<extra></extra>",
        },
    ]  # fmt: skip
    suggested = _finite(suggestion.get("suggested_lr"))
    diverged = _finite(suggestion.get("diverged_lr"))
    if suggested is not None:
        data.append(_marker(suggested, f"suggested rate {suggested:.3g}", PALETTE[2], "solid"))
    if diverged is not None:
        data.append(_marker(diverged, f"diverged at {diverged:.3g}", PALETTE[3], "dash"))
    layout = _layout("Loss against the learning rate", "learning rate (log scale)", "training loss", height=420)
    layout["xaxis"] |= {"type": "log", "exponentformat": "power"}
    layout["yaxis2"] = {"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True}
    shown = [y for y in smoothed if y is not None]
    raw = [y for y in losses if y is not None]
    if shown and raw:
        # Once it diverges the loss grows by orders of magnitude; show the descent and the start of the climb
        # (up to the 4x-the-minimum divergence threshold) and let the rest leave through the top.
        lowest = min(range(len(shown)), key=shown.__getitem__)
        top = max(max(shown[: lowest + 1]), 4 * shown[lowest]) * 1.15
        bottom = min(min(raw), shown[lowest])
        layout["yaxis"]["range"] = [bottom - 0.05 * (top - bottom), top]
    layout["legend"] = {"orientation": "h", "y": -0.2}
    layout["margin"]["b"] = 70
    low, high = spec.get("min_lr"), spec.get("max_lr")
    span = f" from {low:.3g} to {high:.3g}" if isinstance(low, int | float) and isinstance(high, int | float) else ""
    label = (
        f"Line chart of the training loss of each batch and its smoothed value against the learning rate on a "
        f"logarithmic axis{span}, over {len(curve)} recorded point(s)"
    )
    if suggested is not None:
        label += f"; a solid vertical line marks the suggested rate, {suggested:.3g}"
    if diverged is not None:
        label += f"; a dashed one the rate where the loss diverged, {diverged:.3g}"
    elif suggestion:
        label += "; the loss did not diverge within the range"
    return Chart({"data": data, "layout": layout}, label + ".")
