"""A study's specification: what the caller POSTs, validated in full before anything is stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tuner_service.errors import FieldError, InvalidInput, NotFound
from tuner_service.pruning import PrunerSpec
from tuner_service.space import SearchSpace
from tuner_service.task import Objective, TaskSpec

if TYPE_CHECKING:
    from tuner_service.config import Settings
    from tuner_service.store import Store, StudyRecord

ALGORITHMS = ("random", "grid", "bayesian", "tpe", "hyperband", "asha")
SAMPLERS = ("random", "bayesian")
PRIORITIES = ("low", "normal", "high")
STUDY_KEYS = frozenset(
    {
        "name", "dataset", "task", "objective", "search_space", "algorithm", "max_trials",
        "executions_per_trial", "parallelism", "seed", "early_stopping", "validation", "priority", "resources",
        "pruner", "warm_start", "learning_rate_from",
    }
)  # fmt: skip
ALGORITHM_OPTIONS: dict[str, dict[str, tuple[type, float, float]]] = {
    "random": {},
    "grid": {},
    "bayesian": {
        "initial_points": (int, 1, 10_000),
        "num_initial_points": (int, 1, 1000),  # Keras Tuner's name, kept as an alias of initial_points
        "alpha": (float, 0.0, 1.0),
        "beta": (float, 0.0, 100.0),
    },
    "tpe": {"initial_points": (int, 1, 10_000)},
    "hyperband": {"max_epochs": (int, 2, 1000), "factor": (int, 2, 10), "hyperband_iterations": (int, 1, 10)},
    "asha": {"min_epochs": (int, 1, 1000), "max_epochs": (int, 2, 10_000), "reduction_factor": (int, 2, 10)},
}


@dataclass(frozen=True)
class AlgorithmSpec:
    """Which search algorithm decides the next trial, and its options."""

    name: str = "random"
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


@dataclass(frozen=True)
class WarmStart:
    """Earlier studies whose finished trials seed this one's search (same data set and task)."""

    studies: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"studies": list(self.studies)}

    @classmethod
    def from_json(cls, doc: object, errors: list[FieldError], *, field: str = "warm_start") -> WarmStart:
        if doc is None:
            return cls()
        if not isinstance(doc, dict) or set(doc) - {"studies"}:
            errors.append(FieldError(field, 'must be {"studies": [study ids]}'))
            return cls()
        studies = doc.get("studies", [])
        if not isinstance(studies, list) or len(studies) > 100:
            errors.append(FieldError(f"{field}.studies", "must be a list of at most 100 study ids"))
            return cls()
        ids = []
        for index, study_id in enumerate(studies):
            if isinstance(study_id, bool) or not isinstance(study_id, int) or study_id < 1:
                errors.append(FieldError(f"{field}.studies[{index}]", "must be a study id (a positive integer)"))
            else:
                ids.append(study_id)
        return cls(tuple(ids))


@dataclass(frozen=True)
class EarlyStopping:
    """How Keras' EarlyStopping ends each trial's training."""

    patience: int = 3
    min_delta: float = 0.0
    max_epochs: int = 50
    restore_best_weights: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Validation:
    """How the data set is split into training and validation parts."""

    fraction: float = 0.2
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StudySpec:
    """Everything a worker needs to run any trial of a study."""

    name: str
    dataset: str
    task: TaskSpec
    objective: Objective
    search_space: SearchSpace
    algorithm: AlgorithmSpec
    max_trials: int
    executions_per_trial: int = 1
    parallelism: int = 1
    seed: int | None = None
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    validation: Validation = field(default_factory=Validation)
    priority: str = "normal"
    pool: str = "cpu"
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    warm_start: WarmStart = field(default_factory=lambda: WarmStart())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "task": self.task.to_json(),
            "objective": self.objective.to_json(),
            "search_space": self.search_space.to_json(),
            "algorithm": self.algorithm.to_json(),
            "max_trials": self.max_trials,
            "executions_per_trial": self.executions_per_trial,
            "parallelism": self.parallelism,
            "seed": self.seed,
            "early_stopping": self.early_stopping.to_json(),
            "validation": self.validation.to_json(),
            "priority": self.priority,
            "resources": {"gpu": 1} if self.pool == "gpu" else {"cpu": 1},
            "pruner": self.pruner.to_json(),
            "warm_start": self.warm_start.to_json(),
        }

    @classmethod
    def from_json(cls, doc: object, *, max_parameters: int = 64, max_trials_limit: int = 10_000) -> StudySpec:
        """Parse and validate a study document, reporting every problem at once."""
        if not isinstance(doc, dict):
            raise InvalidInput.one("body", "must be a JSON object")
        errors: list[FieldError] = []
        for key in doc:
            if key not in STUDY_KEYS:
                errors.append(FieldError(str(key), f"unknown field; known: {', '.join(sorted(STUDY_KEYS))}"))
        name = _string(doc, "name", errors, max_len=200)
        dataset = _dataset_ref(doc.get("dataset"), errors)
        task = _collect(lambda: TaskSpec.from_json(doc.get("task")), errors)
        objective = None
        if task is not None:
            objective = _collect(lambda: Objective.from_json(doc.get("objective"), task), errors)
        space = _collect(lambda: SearchSpace.from_json(doc.get("search_space"), max_parameters=max_parameters), errors)
        algorithm = _algorithm(doc.get("algorithm", "random"), errors)
        max_trials = _int(doc, "max_trials", errors, 1, max_trials_limit, default=10)
        executions = _int(doc, "executions_per_trial", errors, 1, 10, default=1)
        parallelism = _int(doc, "parallelism", errors, 1, 64, default=1)
        seed = _int(doc, "seed", errors, 0, 2**31 - 1, default=None)
        early = _early_stopping(doc.get("early_stopping", {}), errors)
        validation = _validation(doc.get("validation", {}), errors)
        priority = doc.get("priority", "normal")
        if priority not in PRIORITIES:
            errors.append(FieldError("priority", f"must be one of {', '.join(PRIORITIES)}"))
        pool = _pool(doc.get("resources", {"cpu": 1}), errors)
        pruner = PrunerSpec.from_json(doc.get("pruner"), errors)
        # learning_rate_from is resolved into search_space.learning_rate by submit_study (it needs the store).
        warm_start = WarmStart.from_json(doc.get("warm_start"), errors)
        if errors:
            raise InvalidInput(errors)
        if algorithm.name == "hyperband":
            # Hyperband's own epoch budget defaults to early stopping's, within its valid range 2..27.
            algorithm.options.setdefault("max_epochs", max(2, min(early.max_epochs, 27)))
        if algorithm.name in ("bayesian", "tpe"):
            _initial_points(algorithm, max_trials)
        if algorithm.name == "asha":
            algorithm.options.setdefault("max_epochs", max(2, early.max_epochs))
            min_epochs = algorithm.options.get("min_epochs", 1)
            if min_epochs >= algorithm.options["max_epochs"]:
                raise InvalidInput.one("algorithm.min_epochs", "must be less than max_epochs")
        return cls(
            name=name, dataset=dataset, task=task, objective=objective, search_space=space,
            algorithm=algorithm, max_trials=max_trials, executions_per_trial=executions,
            parallelism=parallelism, seed=seed, early_stopping=early, validation=validation, priority=priority,
            pool=pool, pruner=pruner, warm_start=warm_start,
        )  # type: ignore[arg-type]  # fmt: skip


def _initial_points(algorithm: AlgorithmSpec, max_trials: int) -> None:
    """Random trials before the model proposes: at most the budget. When not given, the proposer chooses
    them from the budget (``tuner_service.proposals.default_initial_points``) and keeps them in its state."""
    options = algorithm.options
    if "num_initial_points" in options and "initial_points" in options:
        raise InvalidInput.one("algorithm.num_initial_points", "give initial_points or num_initial_points, not both")
    for key in ("initial_points", "num_initial_points"):
        if key in options and options[key] > max_trials:
            raise InvalidInput.one(f"algorithm.{key}", f"must be at most max_trials ({max_trials})")


def _pool(value: object, errors: list[FieldError]) -> str:
    """``{"gpu": 1}`` runs on the GPU pool (one trial per GPU); ``{"cpu": N}`` or nothing on the CPU pool."""
    if not isinstance(value, dict) or not value:
        errors.append(FieldError("resources", 'must be {"gpu": 1} or {"cpu": 1}'))
        return "cpu"
    for key, amount in value.items():
        if key not in ("gpu", "cpu"):
            errors.append(FieldError(f"resources.{key}", "unknown resource; known: cpu, gpu"))
        elif not _number_ok(amount, int) or amount < 0:
            errors.append(FieldError(f"resources.{key}", "must be a non-negative integer"))
        elif key == "gpu" and amount > 1:
            errors.append(FieldError("resources.gpu", "a trial uses at most one GPU (workers run one trial per GPU)"))
    return "gpu" if value.get("gpu") else "cpu"


def _collect(parse: Any, errors: list[FieldError]) -> Any:
    try:
        return parse()
    except InvalidInput as exc:
        errors.extend(exc.errors)
        return None


def _string(doc: dict[str, Any], key: str, errors: list[FieldError], *, max_len: int) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip():
        errors.append(FieldError(key, "is required and must be a non-empty string"))
        return ""
    if len(value) > max_len:
        errors.append(FieldError(key, f"must be at most {max_len} characters"))
    return value.strip()


def _dataset_ref(value: object, errors: list[FieldError]) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        errors.append(FieldError("dataset", "is required: a built-in name ('digits'), 'builtin:NAME', or an id"))
        return ""
    text = str(value)
    if text.isdigit() or text.startswith(("builtin:", "sha256:")):
        return text
    return f"builtin:{text}"


def _number_ok(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")


def _int(
    doc: dict[str, Any], key: str, errors: list[FieldError], low: int, high: int, *, default: int | None
) -> int | None:
    value = doc.get(key, default)
    if value is None:
        return None
    if not _number_ok(value, int):
        errors.append(FieldError(key, "must be an integer"))
        return default
    if not low <= value <= high:
        errors.append(FieldError(key, f"must be between {low} and {high}"))
    return value


def _algorithm(value: object, errors: list[FieldError]) -> AlgorithmSpec | None:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        errors.append(FieldError("algorithm", f"must be a name or an object; one of {', '.join(ALGORITHMS)}"))
        return None
    name = value.get("name", "random")
    if name not in ALGORITHMS:
        errors.append(FieldError("algorithm.name", f"unknown algorithm {name!r}; one of {', '.join(ALGORITHMS)}"))
        return None
    allowed = ALGORITHM_OPTIONS[name]
    options: dict[str, Any] = {}
    for key, option in value.items():
        if key == "name":
            continue
        if name == "asha" and key == "sampler":
            if option not in SAMPLERS:
                errors.append(FieldError("algorithm.sampler", f"must be one of {', '.join(SAMPLERS)}"))
            else:
                options[key] = option
            continue
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            errors.append(FieldError(f"algorithm.{key}", f"not an option of {name}; options: {known}"))
            continue
        kind, low, high = allowed[key]
        if not _number_ok(option, kind) or not low <= option <= high:
            errors.append(FieldError(f"algorithm.{key}", f"must be {kind.__name__} between {low} and {high}"))
            continue
        options[key] = option
    return AlgorithmSpec(name, options)


def _early_stopping(value: object, errors: list[FieldError]) -> EarlyStopping | None:
    if not isinstance(value, dict):
        errors.append(FieldError("early_stopping", "must be an object"))
        return None
    limits = {"patience": (int, 0, 1000), "min_delta": (float, 0.0, 1e6), "max_epochs": (int, 1, 10_000)}
    found: dict[str, Any] = {}
    for key, option in value.items():
        if key == "restore_best_weights":
            if not isinstance(option, bool):
                errors.append(FieldError("early_stopping.restore_best_weights", "must be true or false"))
            found[key] = option
        elif key in limits:
            kind, low, high = limits[key]
            if not _number_ok(option, kind) or not low <= option <= high:
                errors.append(FieldError(f"early_stopping.{key}", f"must be {kind.__name__} between {low} and {high}"))
            found[key] = option
        else:
            errors.append(FieldError(f"early_stopping.{key}", "unknown option"))
    try:
        return EarlyStopping(**found)
    except TypeError:
        return None


def _validation(value: object, errors: list[FieldError]) -> Validation | None:
    if not isinstance(value, dict):
        errors.append(FieldError("validation", "must be an object"))
        return None
    fraction = value.get("fraction", 0.2)
    seed = value.get("seed", 0)
    for key in value:
        if key not in ("fraction", "seed"):
            errors.append(FieldError(f"validation.{key}", "unknown option; options: fraction, seed"))
    if not _number_ok(fraction, float) or not 0.05 <= fraction <= 0.5:
        errors.append(FieldError("validation.fraction", "must be a number between 0.05 and 0.5"))
    if not _number_ok(seed, int) or seed < 0:
        errors.append(FieldError("validation.seed", "must be a non-negative integer"))
    return Validation(fraction, seed)


def planned_trials(spec: StudySpec) -> int:
    """The study's trial budget: ``max_trials``, or for Hyperband the trials its brackets will run."""
    if spec.algorithm.name != "hyperband":
        return spec.max_trials
    from tuner_service.search import hyperband_budget

    options = spec.algorithm.options
    return hyperband_budget(
        options.get("max_epochs", 27), options.get("factor", 3), options.get("hyperband_iterations", 1)
    )


def submit_study(
    store: Store,
    settings: Settings,
    doc: object,
    enqueue: Callable[[str, int], object],
    *,
    team_id: int | None = None,
    owner_id: int | None = None,
) -> StudyRecord:
    """Validate ``doc`` in full, store the study as queued for the team and ask for its first trials.

    ``enqueue(pool, count)`` wakes workers of the pool; nothing is stored if validation fails.
    """
    from tuner_service.catalog import find_dataset, register_dataset
    from tuner_service.datasets import check_task

    doc = centre_learning_rate(store, doc, team_id)
    spec = StudySpec.from_json(doc, max_parameters=settings.max_parameters, max_trials_limit=settings.max_trials_limit)
    info, dataset_team = find_dataset(store, spec.dataset, team_id=team_id)
    problems = check_task(info, spec.task.type) + _warm_start_problems(store, spec, info.key, team_id)
    if problems:
        raise InvalidInput(problems)
    dataset = register_dataset(store, info, team_id=dataset_team)
    study = store.create_study(
        name=spec.name,
        dataset_id=dataset.id,
        task_type=spec.task.type,
        algorithm=spec.algorithm.name,
        objective_name=spec.objective.name,
        direction=spec.objective.direction,
        max_trials=planned_trials(spec),
        parallelism=spec.parallelism,
        priority=spec.priority,
        team_id=team_id,
        owner_id=owner_id,
        pool=spec.pool,
        spec=spec.to_json(),
    )
    enqueue(spec.pool, spec.parallelism)
    store.mark_enqueued(study.id)
    return store.get_study(study.id)


def _warm_start_problems(store: Store, spec: StudySpec, dataset_key: str, team_id: int | None) -> list[FieldError]:
    """Seed studies must exist for the caller and share the data set, the task type and the objective."""
    problems = []
    for index, study_id in enumerate(spec.warm_start.studies):
        path = f"warm_start.studies[{index}]"
        try:
            seed = store.get_study(study_id, team_id=team_id)
        except NotFound:
            problems.append(FieldError(path, f"no study {study_id}"))
            continue
        seed_key = store.get_dataset(seed.dataset_id).key
        if seed_key != dataset_key or seed.task_type != spec.task.type or seed.objective_name != spec.objective.name:
            problems.append(FieldError(path, f"study {study_id} has another data set, task type or objective"))
    return problems


def centre_learning_rate(store: Store, doc: object, team_id: int | None) -> object:
    """Apply ``learning_rate_from: {lr_range_test, factor}``: the space's learning_rate becomes a log range
    from suggestion / factor to suggestion · factor (at most 10), read from the caller's finished test."""
    if not isinstance(doc, dict) or "learning_rate_from" not in doc:
        return doc
    source = doc["learning_rate_from"]
    if not isinstance(source, dict) or set(source) - {"lr_range_test", "factor"}:
        raise InvalidInput.one("learning_rate_from", 'must be {"lr_range_test": id, "factor": number}')
    test_id, factor = source.get("lr_range_test"), source.get("factor", 10)
    errors = []
    if isinstance(test_id, bool) or not isinstance(test_id, int):
        errors.append(FieldError("learning_rate_from.lr_range_test", "must be the id of a range test"))
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 1 < factor <= 1000:
        errors.append(FieldError("learning_rate_from.factor", "must be a number greater than 1 and at most 1000"))
    if errors:
        raise InvalidInput(errors)
    try:
        test = store.get_job(test_id, kind="lr_range_test", team_id=team_id)
    except NotFound:
        raise InvalidInput.one("learning_rate_from.lr_range_test", f"no range test {test_id}") from None
    if test.status != "completed" or not test.result:
        raise InvalidInput.one("learning_rate_from.lr_range_test", f"range test {test_id} is {test.status}")
    suggested = test.result["suggestion"]["suggested_lr"]
    space = dict(doc.get("search_space") or {})
    space["learning_rate"] = {
        "type": "float",
        "min": suggested / factor,
        "max": min(10.0, suggested * factor),
        "sampling": "log",
    }
    return {**doc, "search_space": space}
