"""Synthetic finished studies and trials, bulk-inserted through the store's own SQLAlchemy models.

Used by ``leaderboard_scale`` (a million trials) and ``api_load`` (a few thousand). Rows look like the
service's: ``dataset_id``, ``objective_name`` and ``team_id`` copied from the study, ``sort_key`` signed by
``tuner_service.store.store.sort_key`` (``-score`` for maximised objectives), pruned trials ranked with a
score, failed ones without. No TensorFlow.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

DATASETS: list[tuple[str, str]] = [  # built-in data set, task type
    ("digits", "multiclass"),
    ("wine", "multiclass"),
    ("iris", "multiclass"),
    ("breast_cancer", "binary"),
    ("diabetes", "regression"),
    ("synthetic_regression", "regression"),
]
OBJECTIVES: dict[str, list[tuple[str, str]]] = {
    "multiclass": [("val_accuracy", "max"), ("val_loss", "min")],
    "binary": [("val_accuracy", "max"), ("val_auc", "max")],
    "regression": [("val_mae", "min"), ("val_loss", "min")],
}
ALGORITHMS = ("random", "bayesian", "hyperband", "asha")
STATUS_WEIGHTS = (("completed", 0.85), ("pruned", 0.10), ("failed", 0.05))


@dataclass
class Populated:
    """What was inserted: ids to query with, and how long the trial insert took."""

    team_ids: list[int]
    dataset_ids: dict[str, int]
    studies: list[dict[str, Any]]  # id, dataset, task_type, objective, direction, team_id, trials
    trials: int = 0
    insert_s: float = 0.0  # session.execute + commit of the trial batches only
    generate_s: float = 0.0  # building the row dicts in Python
    batches: int = 0
    per_dataset_objective: dict[str, int] = field(default_factory=dict)


def _score(rng: random.Random, objective: str) -> float:
    if objective in ("val_accuracy", "val_auc"):
        return round(1.0 - 0.5 * rng.random() ** 3, 6)
    if objective == "val_mae":
        return round(40.0 + 110.0 * rng.random() ** 2, 4)
    return round(0.02 + 2.0 * rng.random() ** 2, 6)


def _study_sizes(rng: random.Random, trials: int, studies: int) -> list[int]:
    """Log-normally spread sizes (a few studies much larger than the median) that add up to ``trials``."""
    weights = [math.exp(rng.gauss(0.0, 1.0)) for _ in range(studies)]
    total = sum(weights)
    sizes = [max(1, int(trials * w / total)) for w in weights]
    sizes[sizes.index(max(sizes))] += trials - sum(sizes)
    return sizes


def populate(
    store: Any,
    *,
    trials: int,
    studies: int,
    teams: list[str] | None = None,
    batch: int = 20_000,
    seed: int = 0,
    progress: bool = False,
) -> Populated:
    """Insert teams (unless given existing ones by name), the built-in data sets, ``studies`` finished
    studies and ``trials`` finished trials spread over them; trials go in with ``session.execute(insert(TrialRow),
    rows)`` in batches of ``batch``."""
    from sqlalchemy import select

    from tuner_service.datasets import describe_builtin
    from tuner_service.store.models import DatasetRow, StudyRow, TeamRow, TrialRow
    from tuner_service.store.store import sort_key

    rng = random.Random(seed)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with store._write() as session:
        names = teams or [f"team-{i}" for i in range(8)]
        existing = {t.name: t.id for t in session.scalars(select(TeamRow).where(TeamRow.name.in_(names)))}
        for name in names:
            if name not in existing:
                row = TeamRow(name=name, share_weight=1.0)
                session.add(row)
                session.flush()
                existing[name] = row.id
        team_ids = [existing[n] for n in names]
        dataset_ids: dict[str, int] = {}
        for name, _task in DATASETS:
            info = describe_builtin(name)
            row = session.scalar(select(DatasetRow).where(DatasetRow.key == info.key, DatasetRow.team_id.is_(None)))
            if row is None:
                row = DatasetRow(key=info.key, name=name, source="builtin", info=info.to_json(), team_id=None)
                session.add(row)
                session.flush()
            dataset_ids[name] = row.id
        study_rows = []
        for i in range(studies):
            name, task = DATASETS[rng.randrange(len(DATASETS))]
            objective, direction = OBJECTIVES[task][rng.randrange(2)]
            algorithm = ALGORITHMS[i % len(ALGORITHMS)]
            created = base + timedelta(hours=i)
            row = StudyRow(
                name=f"synthetic-{i}",
                status="completed",
                dataset_id=dataset_ids[name],
                task_type=task,
                algorithm=algorithm,
                objective_name=objective,
                direction=direction,
                max_trials=0,
                parallelism=1,
                priority="normal",
                team_id=team_ids[i % len(team_ids)],
                pool="cpu",
                spec={"name": f"synthetic-{i}", "dataset": f"builtin:{name}", "algorithm": {"name": algorithm}},
                created_at=created,
                started_at=created,
                finished_at=created + timedelta(hours=1),
            )
            session.add(row)
            study_rows.append((row, name))
        session.flush()
        meta = [
            {
                "id": r.id,
                "dataset": name,
                "dataset_id": r.dataset_id,
                "task_type": r.task_type,
                "objective": r.objective_name,
                "direction": r.direction,
                "team_id": r.team_id,
            }
            for r, name in study_rows
        ]
    sizes = _study_sizes(rng, trials, studies)
    out = Populated(team_ids, dataset_ids, meta)
    statuses = [s for s, _ in STATUS_WEIGHTS]
    weights = [w for _, w in STATUS_WEIGHTS]
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        start = time.perf_counter()
        with store._write() as session:
            session.execute(insert(TrialRow), pending)
        out.insert_s += time.perf_counter() - start
        out.trials += len(pending)
        out.batches += 1
        pending.clear()
        if progress and out.batches % 10 == 0:
            print(f"[bench]     {out.trials:,} trials inserted ({out.trials / out.insert_s:,.0f}/s)", flush=True)

    for study, size in zip(meta, sizes, strict=True):
        study["trials"] = size
        key = f"{study['dataset']}/{study['objective']}"
        out.per_dataset_objective[key] = out.per_dataset_objective.get(key, 0) + size
        gen_start = time.perf_counter()
        t0 = base + timedelta(minutes=rng.randrange(500_000))
        for number in range(size):
            status = rng.choices(statuses, weights)[0]
            score = None if status == "failed" else _score(rng, study["objective"])
            started = t0 + timedelta(seconds=30 * number)
            duration = 5.0 + 60.0 * rng.random()
            epochs = rng.randint(1, 30)
            pending.append(
                {
                    "study_id": study["id"],
                    "number": number,
                    "oracle_trial_id": f"{number:05d}",
                    "ticket": uuid.UUID(int=rng.getrandbits(128)).hex,
                    "status": status,
                    "hyperparameters": {
                        "hidden_layers": rng.randint(0, 8),
                        "neurons": rng.randint(16, 256),
                        "learning_rate": round(10 ** rng.uniform(-4, -2), 6),
                        "optimizer": rng.choice(("sgd", "adam")),
                        "batch_size": rng.choice((32, 64, 128)),
                    },
                    "dataset_id": study["dataset_id"],
                    "objective_name": study["objective"],
                    "team_id": study["team_id"],
                    "pool": "cpu",
                    "score": score,
                    "sort_key": sort_key(score, study["direction"]),
                    "best_epoch": None if score is None else rng.randint(0, epochs - 1),
                    "epochs_run": epochs,
                    "metrics": None if score is None else {study["objective"]: score, "loss": round(rng.random(), 6)},
                    "worker": f"worker-{rng.randrange(4)}",
                    "heartbeat_at": started + timedelta(seconds=duration),
                    "created_at": started,
                    "started_at": started,
                    "finished_at": started + timedelta(seconds=duration),
                    "duration_s": duration,
                    "retries": 0,
                    "stop_requested": False,
                    "error": "diverged: no finite objective" if status == "failed" else None,
                }
            )
            if len(pending) >= batch:
                out.generate_s += time.perf_counter() - gen_start
                flush()
                gen_start = time.perf_counter()
        out.generate_s += time.perf_counter() - gen_start
    if pending:
        flush()
    return out
