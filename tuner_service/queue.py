"""Which study a free worker serves next: priority first, then weighted fair share between teams (the
team furthest below its share of recent worker time), then submission order; quotas and a study's own
parallelism hold studies back, and each held study says why."""

from __future__ import annotations

from dataclasses import dataclass

PRIORITY_ORDER = {"high": 0, "normal": 1, "low": 2}
POOLS = ("cpu", "gpu")


@dataclass(frozen=True)
class TeamLoad:
    """A team's recent use of the workers and its quotas."""

    team_id: int | None
    name: str
    share_weight: float = 1.0
    usage_s: float = 0.0  # worker seconds within the fair-share window, running trials included
    running: int = 0
    max_concurrent_trials: int | None = None
    gpu_hours_today: float = 0.0
    gpu_hours_per_day: float | None = None

    @property
    def normalized_usage(self) -> float:
        return self.usage_s / self.share_weight


@dataclass(frozen=True)
class WaitingStudy:
    """A study that may still want trials, as the scheduler sees it."""

    study_id: int
    name: str
    team_id: int | None
    priority: str
    pool: str
    status: str
    running: int
    parallelism: int
    owed: int  # pending trials plus budget not yet started


# What a waiting study that nothing holds back is waiting for (the API, the CLI and the dashboard say the same).
READY = "ready: next free worker"


def blocked_reason(study: WaitingStudy, team: TeamLoad) -> str | None:
    """Why the study cannot start a trial now, or ``None`` if it can."""
    if study.status == "paused":
        return "paused"
    if study.owed <= 0:
        return "every trial has started"
    if study.running >= study.parallelism:
        return f"at its parallelism ({study.running} of {study.parallelism} running)"
    if team.max_concurrent_trials is not None and team.running >= team.max_concurrent_trials:
        return f"team {team.name} is at its quota of {team.max_concurrent_trials} concurrent trials"
    if study.pool == "gpu" and team.gpu_hours_per_day is not None and team.gpu_hours_today >= team.gpu_hours_per_day:
        return f"team {team.name} used its {team.gpu_hours_per_day:g} GPU-hours for today"
    return None


def order(studies: list[WaitingStudy], teams: dict[int | None, TeamLoad]) -> list[WaitingStudy]:
    """Every study in the order the scheduler would serve it (blocked ones included, for the queue view)."""

    def key(study: WaitingStudy) -> tuple[int, float, int]:
        team = teams.get(study.team_id) or TeamLoad(study.team_id, "-")
        return (PRIORITY_ORDER.get(study.priority, 1), team.normalized_usage, study.study_id)

    return sorted(studies, key=key)


def runnable(studies: list[WaitingStudy], teams: dict[int | None, TeamLoad]) -> list[WaitingStudy]:
    """The studies that may start a trial now, best first."""
    return [
        s for s in order(studies, teams) if blocked_reason(s, teams.get(s.team_id) or TeamLoad(s.team_id, "-")) is None
    ]
