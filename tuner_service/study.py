"""A study's specification: what the caller POSTs, validated in full before anything is stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tuner_service.errors import BrokerUnavailable, FieldError, InvalidInput, NotFound
from tuner_service.gpu_slots import MAX_GPU_SLOTS
from tuner_service.hypermodels.registry import ModelRef
from tuner_service.pruning import PrunerSpec
from tuner_service.space import SearchSpace
from tuner_service.task import Objective, TaskSpec, infer_direction

if TYPE_CHECKING:
    from tuner_service.config import Settings
    from tuner_service.datasets import DatasetInfo
    from tuner_service.store import Store, StudyRecord

ALGORITHMS = ("random", "grid", "bayesian", "tpe", "hyperband", "asha")
SAMPLERS = ("random", "bayesian", "tpe")
PRIORITIES = ("low", "normal", "high")
STUDY_KEYS = frozenset(
    {
        "name", "dataset", "task", "objective", "search_space", "algorithm", "max_trials",
        "executions_per_trial", "parallelism", "seed", "early_stopping", "validation", "priority", "resources",
        "pruner", "warm_start", "learning_rate_from", "model",
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
    "asha": {
        "min_epochs": (int, 1, 1000),
        "max_epochs": (int, 2, 10_000),
        "reduction_factor": (int, 2, 10),
        "initial_points": (int, 1, 10_000),  # only with a model sampler: its random configurations first
    },
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
    gpu_slots: int = 1  # of the K slots of a GPU shared by K worker processes (tuner_service.gpu_slots)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    warm_start: WarmStart = field(default_factory=lambda: WarmStart())
    model: ModelRef = field(default_factory=ModelRef)

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
            "resources": self._resources(),
            "pruner": self.pruner.to_json(),
            "warm_start": self.warm_start.to_json(),
            "model": self.model.to_json(),
        }

    def _resources(self) -> dict[str, int]:
        if self.pool != "gpu":
            return {"cpu": 1}
        return {"gpu": 1, "gpu_slots": self.gpu_slots} if self.gpu_slots != 1 else {"gpu": 1}

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
        model = ModelRef.from_json(doc.get("model"), errors)
        task = _collect(lambda: TaskSpec.from_json(doc.get("task")), errors)
        objective = None
        if task is not None and model.is_builtin_mlp:
            objective = _collect(lambda: Objective.from_json(doc.get("objective"), task), errors)
        elif task is not None:
            objective = _hypermodel_objective(doc.get("objective"), task, errors)
        space = _collect(
            lambda: SearchSpace.from_json(
                doc.get("search_space"), max_parameters=max_parameters, mlp_domains=model.is_builtin_mlp
            ),
            errors,
        )
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
        pool, gpu_slots = _resources(doc.get("resources", {"cpu": 1}), errors)
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
            if "initial_points" in algorithm.options and algorithm.options.get("sampler", "random") == "random":
                raise InvalidInput.one(
                    "algorithm.initial_points", "only with a model sampler (sampler: bayesian or tpe)"
                )
            _initial_points(algorithm, max_trials)
            algorithm.options.setdefault("max_epochs", max(2, early.max_epochs))
            min_epochs = algorithm.options.get("min_epochs", 1)
            if min_epochs >= algorithm.options["max_epochs"]:
                raise InvalidInput.one("algorithm.min_epochs", "must be less than max_epochs")
        return cls(
            name=name, dataset=dataset, task=task, objective=objective, search_space=space,
            algorithm=algorithm, max_trials=max_trials, executions_per_trial=executions,
            parallelism=parallelism, seed=seed, early_stopping=early, validation=validation, priority=priority,
            pool=pool, gpu_slots=gpu_slots, pruner=pruner, warm_start=warm_start, model=model,
        )  # type: ignore[arg-type]  # fmt: skip


def _hypermodel_objective(doc: object, task: TaskSpec, errors: list[FieldError]) -> Objective | None:
    """An installed hypermodel compiles its own metrics, so any History key may be the objective; a name it
    does not report fails its first trial with the list of the keys it does report."""
    if doc is None:
        return task.default_objective()
    if isinstance(doc, str):
        doc = {"name": doc}
    name = doc.get("name") if isinstance(doc, dict) else None
    direction = doc.get("direction") if isinstance(doc, dict) else None
    if not isinstance(name, str) or not name or len(name) > 100:
        errors.append(FieldError("objective.name", "required: the name of a metric the model reports"))
        return None
    if direction is not None and direction not in ("min", "max"):
        errors.append(FieldError("objective.direction", f"must be 'min' or 'max', not {direction!r}"))
        return None
    return Objective(name, direction or infer_direction(name))


def _initial_points(algorithm: AlgorithmSpec, max_trials: int) -> None:
    """Random trials before the model proposes: at most the budget. When not given, the proposer chooses
    them from the budget (``tuner_service.proposals.default_initial_points``) and keeps them in its state."""
    options = algorithm.options
    if "num_initial_points" in options and "initial_points" in options:
        raise InvalidInput.one("algorithm.num_initial_points", "give initial_points or num_initial_points, not both")
    for key in ("initial_points", "num_initial_points"):
        if key in options and options[key] > max_trials:
            raise InvalidInput.one(f"algorithm.{key}", f"must be at most max_trials ({max_trials})")


def _resources(value: object, errors: list[FieldError]) -> tuple[str, int]:
    """The pool and GPU slots: ``{"gpu": 1}`` runs on the GPU pool, each trial taking ``gpu_slots`` (default 1)
    of the K slots of a GPU that ``--per-gpu K`` worker processes share; ``{"cpu": N}`` or nothing on the CPU
    pool."""
    if not isinstance(value, dict) or not value:
        errors.append(FieldError("resources", 'must be {"gpu": 1} or {"cpu": 1}'))
        return "cpu", 1
    for key, amount in value.items():
        if key not in ("gpu", "cpu", "gpu_slots"):
            errors.append(FieldError(f"resources.{key}", "unknown resource; known: cpu, gpu, gpu_slots"))
        elif key == "gpu_slots":
            continue
        elif not _number_ok(amount, int) or amount < 0:
            errors.append(FieldError(f"resources.{key}", "must be a non-negative integer"))
        elif key == "gpu" and amount > 1:
            errors.append(FieldError("resources.gpu", "a trial uses at most one GPU (workers run one trial per GPU)"))
    pool = "gpu" if value.get("gpu") else "cpu"
    return pool, _gpu_slots(value, pool, errors)


def _gpu_slots(resources: dict[str, Any], pool: str, errors: list[FieldError]) -> int:
    """How many of its GPU's slots a trial takes: an integer from 1 to MAX_GPU_SLOTS, for GPU studies only."""
    if "gpu_slots" not in resources:
        return 1
    slots = resources["gpu_slots"]
    if not _number_ok(slots, int) or not 1 <= slots <= MAX_GPU_SLOTS:
        errors.append(FieldError("resources.gpu_slots", f"must be an integer between 1 and {MAX_GPU_SLOTS}"))
        return 1
    if pool != "gpu":
        errors.append(FieldError("resources.gpu_slots", 'only for studies that ask for a GPU ("gpu": 1)'))
        return 1
    return slots


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


def budget_basis(spec: dict[str, Any]) -> str:
    """Where a stored study's trial budget comes from, in words: Hyperband's brackets decide it (``max_trials``
    does not apply), every other algorithm runs ``max_trials``."""
    algorithm = spec.get("algorithm") or {}
    if algorithm.get("name") != "hyperband":
        return "max_trials"
    return (
        f"hyperband brackets for max_epochs {algorithm.get('max_epochs', 27)}, factor {algorithm.get('factor', 3)}, "
        f"{algorithm.get('hyperband_iterations', 1)} iteration(s); max_trials does not apply"
    )


@dataclass(frozen=True)
class Submission:
    """A stored study, whether its first trials reached the broker, and whether an earlier request with the
    same idempotency key had already stored it (``replayed``)."""

    study: StudyRecord
    enqueued: bool
    replayed: bool = False


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

    ``enqueue(pool, count)`` wakes workers of the pool; nothing is stored if validation fails. With the broker
    away the study is stored all the same and the reaper enqueues it once the broker is back.
    """
    return submit(store, settings, doc, enqueue, team_id=team_id, owner_id=owner_id).study


def submit(
    store: Store,
    settings: Settings,
    doc: object,
    enqueue: Callable[[str, int], object],
    *,
    team_id: int | None = None,
    owner_id: int | None = None,
    idempotency_key: str | None = None,
) -> Submission:
    """:func:`submit_study`, saying whether the broker took the first trials; a retry with the same
    ``idempotency_key`` returns the study the first request stored instead of storing another."""
    from tuner_service.catalog import find_dataset, register_dataset
    from tuner_service.contract import Study, check_document, contract_errors
    from tuner_service.datasets import check_task
    from tuner_service.hypermodels.validate import input_kind_problems, resolve_study_model

    check_document(doc)  # NUL, lone surrogates, depth: whatever the entry point (API, dashboard form)
    if idempotency_key is not None:
        earlier = store.study_by_idempotency_key(team_id, idempotency_key)
        if earlier is not None:
            # Its first request enqueued it, or (broker away) left it to the reaper: nothing to send again.
            return Submission(earlier, enqueued=True, replayed=True)
    sent = doc
    doc = centre_learning_rate(store, doc, team_id)
    doc, offer = resolve_study_model(store, settings, doc)
    try:
        spec = StudySpec.from_json(
            doc, max_parameters=settings.max_parameters, max_trials_limit=settings.max_trials_limit
        )
    except InvalidInput as exc:
        # A data set that does not exist is reported with the other faults, not after they are fixed.
        raise InvalidInput(exc.errors + _dataset_problems(store, doc, exc.errors, team_id)) from None
    broken = contract_errors(Study, sent)  # after the precise checks: what they let through, the document refuses
    if broken:
        raise InvalidInput(broken)
    info, dataset_team = find_dataset(store, spec.dataset, team_id=team_id)
    problems = check_task(info, spec.task.type) + _warm_start_problems(store, spec, info.key, team_id)
    problems += input_kind_problems(offer, info)
    if not problems and offer is None:  # the built-in MLP: its size follows from the space (a hypermodel's does not)
        problems = model_size_problems(store, settings, spec, info, team_id)
    if problems:
        raise InvalidInput(problems)
    dataset = register_dataset(store, info, team_id=dataset_team)
    stored = spec.to_json()
    if offer is not None:  # which code the study tunes, as announced: for the snippet and for reproducing it
        stored["model"].update(target=offer.target, package=offer.package, version=offer.version)
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
        spec=stored,
        idempotency_key=idempotency_key,
    )
    try:
        enqueue(spec.pool, spec.parallelism)
    except BrokerUnavailable:
        return Submission(store.get_study(study.id), enqueued=False)
    store.mark_enqueued(study.id)
    return Submission(store.get_study(study.id), enqueued=True)


def _dataset_problems(store: Store, doc: object, found: list[FieldError], team_id: int | None) -> list[FieldError]:
    """Whether the study's data set exists for the team, unless its reference was already reported as malformed."""
    from tuner_service.catalog import find_dataset

    if not isinstance(doc, dict) or any(e.field == "dataset" for e in found):
        return []
    ref = _dataset_ref(doc.get("dataset"), [])
    try:
        find_dataset(store, ref, team_id=team_id)
    except InvalidInput as exc:
        return list(exc.errors)
    return []


def model_size_problems(
    store: Store, settings: Settings, spec: StudySpec, info: DatasetInfo, team_id: int | None
) -> list[FieldError]:
    """The space's largest model against the deployment's (or the team's lower) limits."""
    from tuner_service.datasets import output_units
    from tuner_service.model_size import limits_for, problems, space_worst_case

    size = space_worst_case(
        spec.search_space,
        n_features=info.n_features,
        n_outputs=output_units(info, spec.task.type),
        wide_deep=spec.task.architecture == "wide_deep",
    )
    limits = limits_for(settings.max_model_params, settings.max_activation_bytes, store.team_model_limit(team_id))
    given = {p.name for p in spec.search_space.parameters}
    return problems(size, limits, prefix="search_space.", given=given)


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
