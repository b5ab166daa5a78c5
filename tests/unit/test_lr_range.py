"""Reading a suggestion off a range-test curve, and validating a range test's spec (pure)."""

from __future__ import annotations

import math

import pytest

from tuner_service.errors import InvalidInput
from tuner_service.lr_range import RangeTestSpec, analyse, smooth


def bowl(rates: list[float], best: float, blow_up: float) -> list[float]:
    """A loss that falls until ``best``, then climbs, and explodes past ``blow_up``."""
    out = []
    for rate in rates:
        x = math.log10(rate / best)
        out.append(1.0 + x * x if rate < blow_up else 1.0 + 100 * (rate / blow_up))
    return out


def test_the_suggestion_is_a_bit_below_the_minimum_and_divergence_is_reported() -> None:
    spec = RangeTestSpec.from_json({"dataset": "digits", "task": "multiclass", "steps": 400})
    rates = [spec.rate(i) for i in range(spec.steps)]
    suggestion = analyse(rates, bowl(rates, best=0.1, blow_up=1.0), beta=0.9)
    assert 0.05 < suggestion.min_loss_lr < 0.5  # smoothing lags the true minimum a little
    assert suggestion.suggested_lr == pytest.approx(suggestion.min_loss_lr / 3)
    assert 0.5 < suggestion.diverged_lr < 2.0
    assert suggestion.half_diverged_lr == pytest.approx(suggestion.diverged_lr / 2)


def test_nan_losses_count_as_divergence() -> None:
    rates = [1e-4 * 1.05**i for i in range(200)]
    losses = [1.0 / (1 + i) if i < 150 else math.nan for i in range(200)]
    suggestion = analyse(rates, losses, beta=0.5)
    assert suggestion.diverged_lr == pytest.approx(rates[149])


def test_too_short_a_curve_is_refused() -> None:
    with pytest.raises(ValueError, match="fewer than 10"):
        analyse([1e-3] * 5, [1.0] * 5)


def test_smoothing_is_bias_corrected() -> None:
    assert smooth([2.0, 2.0, 2.0], 0.98) == pytest.approx([2.0, 2.0, 2.0])


def test_rates_rise_exponentially_from_min_to_max() -> None:
    spec = RangeTestSpec.from_json(
        {"dataset": "digits", "task": "multiclass", "min_lr": 1e-5, "max_lr": 10, "steps": 61}
    )
    assert [round(math.log10(spec.rate(i)), 6) for i in range(0, 61, 10)] == [-5, -4, -3, -2, -1, 0, 1]


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"min_lr": 1.0, "max_lr": 0.1}, ["min_lr"]),
        ({"min_lr": 0.0}, ["min_lr"]),
        ({"min_lr": -1e-3}, ["min_lr"]),
        ({"max_lr": 0}, ["max_lr"]),
        ({"max_lr": 5000}, ["max_lr"]),
        ({"steps": 5}, ["steps"]),
        ({"smoothing": 1.0}, ["smoothing"]),
        ({"architecture": {"optimizer": "sgdd"}}, ["architecture.optimizer"]),
        ({"architecture": {"width": 3}}, ["architecture.width"]),
        ({"dataset": ""}, ["dataset"]),
        ({"task": {"type": "ranking"}}, ["task.type"]),
        ({"lr": 0.1}, ["lr"]),
    ],
)
def test_bad_specs_name_their_fields(changes: dict, fields: list[str]) -> None:
    doc = {"dataset": "digits", "task": "multiclass", **changes}
    with pytest.raises(InvalidInput) as caught:
        RangeTestSpec.from_json(doc)
    assert [e.field for e in caught.value.errors] == fields
