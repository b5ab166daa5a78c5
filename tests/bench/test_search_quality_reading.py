"""How search_quality reads its results: scores that differ only by float32 rounding are the same score."""

from __future__ import annotations

import numpy as np

from bench import search_quality as sq


def _test_mean(scores: list[int], rows: int) -> float:
    """The mean of per-seed accuracies as Keras reports them: correct rows over ``rows``, in float32."""
    return float(np.mean([float(np.float32(n) / np.float32(rows)) for n in scores]))


# Two contenders' five test scores on 36 rows: 167 correct rows in all for both, in different seeds (wine).
OUTSIDE, SERVICE = _test_mean([34, 32, 36, 33, 32], 36), _test_mean([30, 34, 34, 34, 35], 36)


def test_the_same_counts_of_correct_rows_are_the_same_score_and_one_row_more_is_better() -> None:
    outside, service = OUTSIDE, SERVICE
    assert outside != service  # float32 rounding, not a difference in the predictions
    assert sq._same(outside, service) and not sq._better(outside, service, "max")
    one_more = _test_mean([31, 34, 34, 34, 35], 36)
    assert sq._better(one_more, outside, "max") and not sq._better(outside, one_more, "max")
    assert sq._better(44.0, 44.5, "min") and not sq._better(44.5, 44.0, "min")


def test_a_tie_on_the_mean_meets_the_goal_and_is_ranked_as_a_tie() -> None:
    outside, service = OUTSIDE, SERVICE
    lower = _test_mean([31, 32, 36, 33, 32], 36)
    data = {
        "direction": "max",
        "contenders": {
            "kt_hyperband": {"test_mean": outside},
            "kt_random": {"test_mean": lower},
            "svc_bayesian": {"test_mean": service},
            "svc_random": {"test_mean": lower},
        },
    }
    goal = sq.quality_goal(data, "test_mean")
    assert goal["top"] == "svc_bayesian" and goal["holds"]
    assert goal["per_service"] == {"svc_bayesian": True, "svc_random": False}
    assert sq._rank(data, "svc_bayesian", "test_mean") == "1 (tied) of 4"
    assert sq._rank(data, "svc_random", "test_mean") == "3 (tied) of 4"
    assert sq.epochs_to([0.5, outside, None], service, "max") == 2
