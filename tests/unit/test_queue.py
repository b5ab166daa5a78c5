"""The scheduler's order and its reasons (pure)."""

from __future__ import annotations

from tuner_service.queue import TeamLoad, WaitingStudy, blocked_reason, order, runnable


def study(study_id: int, team: int | None, priority: str = "normal", **kw: object) -> WaitingStudy:
    fields = {"name": f"s{study_id}", "pool": "cpu", "status": "queued", "running": 0, "parallelism": 1, "owed": 5}
    fields.update(kw)
    return WaitingStudy(study_id=study_id, team_id=team, priority=priority, **fields)  # type: ignore[arg-type]


def test_priority_comes_before_fair_share_and_submission_order() -> None:
    teams = {1: TeamLoad(1, "a", usage_s=0.0), 2: TeamLoad(2, "b", usage_s=1000.0)}
    studies = [study(1, 1, "low"), study(2, 2, "high"), study(3, 1, "normal")]
    assert [s.study_id for s in order(studies, teams)] == [2, 3, 1]


def test_the_team_furthest_below_its_weighted_share_goes_first() -> None:
    # a: 200 s at weight 2 -> 100 per unit of weight; b: 150 s at weight 1 -> 150.
    teams = {1: TeamLoad(1, "a", share_weight=2.0, usage_s=200.0), 2: TeamLoad(2, "b", share_weight=1.0, usage_s=150.0)}
    assert [s.study_id for s in order([study(1, 2), study(2, 1)], teams)] == [2, 1]


def test_submission_order_breaks_ties() -> None:
    teams = {1: TeamLoad(1, "a")}
    assert [s.study_id for s in order([study(7, 1), study(3, 1), study(5, 1)], teams)] == [3, 5, 7]


def test_simulated_split_follows_the_weights() -> None:
    """Serving equal-length trials one at a time, a 2:1 weighting gives a 2:1 split of worker time."""
    usage = {1: 0.0, 2: 0.0}
    weights = {1: 2.0, 2: 1.0}
    served = {1: 0, 2: 0}
    for _ in range(300):
        teams = {t: TeamLoad(t, str(t), share_weight=weights[t], usage_s=usage[t]) for t in usage}
        first = runnable([study(1, 1), study(2, 2)], teams)[0]
        served[first.team_id] += 1
        usage[first.team_id] += 3.0
    assert served[1] == 200 and served[2] == 100


def test_blocked_reasons() -> None:
    team = TeamLoad(1, "a", running=2, max_concurrent_trials=2)
    assert "quota of 2 concurrent trials" in blocked_reason(study(1, 1), team)
    free = TeamLoad(1, "a")
    assert blocked_reason(study(1, 1, status="paused"), free) == "paused"
    assert "parallelism" in blocked_reason(study(1, 1, running=1, parallelism=1), free)
    assert blocked_reason(study(1, 1, owed=0), free) == "every trial has started"
    gpu_team = TeamLoad(1, "a", gpu_hours_today=4.0, gpu_hours_per_day=4.0)
    assert "GPU-hours" in blocked_reason(study(1, 1, pool="gpu"), gpu_team)
    assert blocked_reason(study(1, 1, pool="cpu"), gpu_team) is None  # the GPU quota does not hold CPU work
    assert blocked_reason(study(1, 1), free) is None


def test_runnable_skips_blocked_studies_but_keeps_the_order() -> None:
    teams = {1: TeamLoad(1, "a", running=1, max_concurrent_trials=1), 2: TeamLoad(2, "b")}
    studies = [study(1, 1, "high"), study(2, 2, "low"), study(3, 2, "normal")]
    assert [s.study_id for s in runnable(studies, teams)] == [3, 2]
