"""Median and successive-halving pruners on fixed curves (pure)."""

from __future__ import annotations

import pytest

from tuner_service.errors import FieldError
from tuner_service.pruning import PrunerSpec, best_so_far, rungs, should_prune

MEDIAN = PrunerSpec("median", warmup_epochs=1, min_trials=3)


def test_best_so_far_skips_missing_and_non_finite_values() -> None:
    assert best_so_far([None, 0.5, float("nan"), 0.4, 0.7], "max") == [None, 0.5, 0.5, 0.5, 0.7]
    assert best_so_far([3.0, 2.0, 2.5], "min") == [3.0, 2.0, 2.0]


def test_median_prunes_a_trial_below_the_median_after_warm_up() -> None:
    others = [[0.5, 0.8, 0.9], [0.4, 0.7, 0.8], [0.6, 0.75, 0.85]]
    assert should_prune(MEDIAN, "max", [0.1], others) is None  # still warming up
    reason = should_prune(MEDIAN, "max", [0.1, 0.2], others)
    assert reason is not None and "median 0.75" in reason
    assert should_prune(MEDIAN, "max", [0.1, 0.9], others) is None  # above the median


def test_median_needs_enough_other_trials_at_that_epoch() -> None:
    short = [[0.9], [0.9], [0.9, 0.95]]  # only one reached epoch 2
    assert should_prune(MEDIAN, "max", [0.1, 0.1], short) is None


def test_median_for_a_minimised_objective() -> None:
    others = [[3.0, 2.0], [3.0, 1.5], [2.5, 1.8]]
    assert should_prune(MEDIAN, "min", [3.0, 2.5], others) is not None
    assert should_prune(MEDIAN, "min", [3.0, 1.0], others) is None


def test_asha_pruner_keeps_the_top_third_at_each_rung() -> None:
    spec = PrunerSpec("asha", min_epochs=1, reduction_factor=3)
    assert rungs(1, 3, 30) == [1, 3, 9, 27]
    others = [[0.9], [0.8], [0.7], [0.6], [0.5]]
    assert should_prune(spec, "max", [0.95], others) is None  # best of six: kept
    assert should_prune(spec, "max", [0.85], others) is None  # second of six: kept (6 // 3 = 2)
    assert "rank 3 of 6" in should_prune(spec, "max", [0.75], others)
    assert should_prune(spec, "max", [0.1, 0.1], [[0.9, 0.9]] * 5) is None  # epoch 2 is no rung


def test_no_pruner_never_prunes() -> None:
    assert should_prune(PrunerSpec(), "max", [0.0] * 10, [[1.0] * 10] * 10) is None


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ("sometimes", "pruner.name"),
        ({"name": "median", "warmup_epochs": -1}, "pruner.warmup_epochs"),
        ({"name": "asha", "reduction_factor": 1}, "pruner.reduction_factor"),
        ({"name": "median", "patience": 3}, "pruner.patience"),
        (42, "pruner"),
    ],
)
def test_bad_pruner_specs_name_the_field(doc: object, field: str) -> None:
    errors: list[FieldError] = []
    PrunerSpec.from_json(doc, errors)
    assert [e.field for e in errors] == [field]
