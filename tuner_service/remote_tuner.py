"""``RemoteTuner``: Keras Tuner's ``search`` / ``get_best_*`` / ``results_summary`` against the service.

Change ``keras_tuner.RandomSearch(build_model, ...)`` into ``RemoteTuner(hypermodel=..., url=..., token=...)``
and the trials run on the service's workers, which must have the hypermodel installed (uploads never carry
code). Only numpy and requests are imported here: TensorFlow is imported when a model is loaded, never before.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import signal
import sys
import tempfile
import threading
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuner_service.client import ApiError, Client

if TYPE_CHECKING:
    from collections.abc import Iterator

KT_TO_SERVICE = {"randomsearch": "random", "bayesianoptimization": "bayesian", "gridsearch": "grid"}
# The task a target implies (the service infers the target's kind the same way on upload).
TASK_OF_TARGET = {"continuous": "regression", "binary": "binary", "multiclass": "multiclass"}
TASK_OF_TARGET["multilabel"] = "multilabel"


@contextlib.contextmanager
def ctrl_c() -> Iterator[threading.Event]:
    """Turn Ctrl-C into an event that the caller checks between requests, instead of an exception raised at
    whatever line runs: one raised inside a request or a print can leave a lock held and hang the cancel
    that follows, and one raised while the study is being submitted loses its id. A second Ctrl-C raises
    ``KeyboardInterrupt`` at once. Only the main thread can take signals; elsewhere nothing changes."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield interrupted
        return

    def on_ctrl_c(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()

    signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass(frozen=True)
class RemoteHyperParameters:
    """One trial's values, read like ``keras_tuner.HyperParameters`` (``hp.get(name)``, ``hp.values``)."""

    values: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.values[name]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


class RemoteTuner:
    """A Keras Tuner-like tuner whose search runs as a study on a tuner-service deployment.

    ``hypermodel`` is the name a worker announced (``GET /api/v1/hypermodels``), or the installed
    ``build_model`` function / ``HyperModel`` class itself, matched to its entry point. ``hyperparameters``
    (a ``keras_tuner.HyperParameters`` or the service's search-space JSON) narrows or fixes declared
    parameters; ``tune_new_entries=False`` keeps the others at their defaults, as in Keras Tuner.
    """

    def __init__(
        self,
        hypermodel: Any = "mlp",
        *,
        objective: Any = None,
        max_trials: int = 10,
        algorithm: str = "random",
        url: str = "http://127.0.0.1:8750",
        token: str | None = None,
        hyperparameters: Any = None,
        tune_new_entries: bool = True,
        executions_per_trial: int = 1,
        seed: int | None = None,
        project_name: str = "remote-tuner",
        resources: dict[str, int] | None = None,
        task: dict[str, Any] | str | None = None,
        algorithm_options: dict[str, Any] | None = None,
        progress: bool = True,
        poll_s: float = 1.0,
    ) -> None:
        self.client = Client(url, token=token)
        self.hypermodel = hypermodel
        self.objective = objective
        self.max_trials = max_trials
        self.algorithm = KT_TO_SERVICE.get(algorithm.lower().replace("_", ""), algorithm)
        self.hyperparameters = hyperparameters
        self.tune_new_entries = tune_new_entries
        self.executions_per_trial = executions_per_trial
        self.seed = seed
        self.project_name = project_name
        self.resources = resources
        self.task = task
        self.algorithm_options = dict(algorithm_options or {})
        self.progress = progress
        self.poll_s = poll_s
        self.study_id: int | None = None
        self.study: dict[str, Any] | None = None

    # -- search --------------------------------------------------------------------------------
    def search(
        self,
        x: Any,
        y: Any,
        *,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float | None = None,
        epochs: int = 10,
        callbacks: list[Any] | None = None,
        **unsupported: Any,
    ) -> dict[str, Any]:
        """Upload the arrays (once: by content hash), submit the study, show progress, return when it ends.

        Ctrl-C cancels the study on the service and re-raises ``KeyboardInterrupt``.
        """
        if unsupported:
            raise TypeError(f"search() arguments not supported remotely: {', '.join(sorted(unsupported))}")
        data, digest = npz_bytes(x, y, validation_data)
        doc = self._study_doc(f"sha256:{digest}", np.asarray(y), epochs, callbacks or [], validation_split)
        with ctrl_c() as interrupted:
            study = self._submit(doc, data)
            self.study_id = study["id"]
            try:
                self.study = self.client.wait(
                    self.study_id, poll_s=self.poll_s, on_progress=self._show, stop=interrupted
                )
            except KeyboardInterrupt:  # Ctrl-C where ctrl_c() could not take it (not the main thread)
                interrupted.set()
            if interrupted.is_set():
                self.client.cancel(self.study_id)
                if self.progress:
                    print(f"\nstudy {self.study_id} cancelled", file=sys.stderr)
                raise KeyboardInterrupt
        if self.progress:
            print(file=sys.stderr)
        if self.study["status"] == "failed":
            raise RuntimeError(f"study {self.study_id} failed: {self.study.get('error')}")
        return self.study

    def _submit(self, doc: dict[str, Any], data: bytes) -> dict[str, Any]:
        try:
            return self.client.submit_study(doc)
        except ApiError as exc:
            if not any(e.get("field") == "dataset" for e in exc.problem.get("errors") or []):
                raise
        # The service does not hold these bytes yet: upload them once, then submit again.
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{self.project_name}.npz"
            path.write_bytes(data)
            self.client.upload_dataset(path)
        return self.client.submit_study(doc)

    def _study_doc(
        self, dataset: str, y: np.ndarray, epochs: int, callbacks: list[Any], validation_split: float | None
    ) -> dict[str, Any]:
        from tuner_service.datasets import infer_target_kind

        task = self.task or {"type": TASK_OF_TARGET[infer_target_kind(y)[0]]}
        doc: dict[str, Any] = {
            "name": self.project_name,
            "dataset": dataset,
            "task": task,
            "model": {"hypermodel": self._hypermodel_name(), "tune_new_entries": self.tune_new_entries},
            "algorithm": {"name": self.algorithm, **self.algorithm_options},
            "max_trials": self.max_trials,
            "executions_per_trial": self.executions_per_trial,
            "early_stopping": _early_stopping(callbacks, epochs, self._objective_name()),
        }
        if self.algorithm == "hyperband":
            doc["algorithm"].setdefault("max_epochs", epochs)
        if self.objective is not None:
            doc["objective"] = _objective(self.objective)
        if self.hyperparameters is not None:
            space = self.hyperparameters
            doc["search_space"] = space.get_config() if hasattr(space, "get_config") else space
        if self.seed is not None:
            doc["seed"] = self.seed
        if validation_split is not None:
            doc["validation"] = {"fraction": validation_split}
        if self.resources is not None:
            doc["resources"] = self.resources
        return doc

    def _objective_name(self) -> str | None:
        return None if self.objective is None else _objective(self.objective)["name"]

    def _hypermodel_name(self) -> str:
        if isinstance(self.hypermodel, str):
            return self.hypermodel
        target = self.hypermodel if isinstance(self.hypermodel, type) or callable(self.hypermodel) else None
        cls = type(self.hypermodel) if target is None or not hasattr(target, "__qualname__") else target
        wanted = f"{cls.__module__}:{cls.__qualname__}"
        for item in self.client._call("GET", "/api/v1/hypermodels")["items"]:
            if item["target"] == wanted:
                return item["name"]
        raise ValueError(f"no worker announced {wanted}; install its package on the workers (GET /api/v1/hypermodels)")

    def _show(self, study: dict[str, Any]) -> None:
        if not self.progress:
            return
        progress = study.get("progress") or {}
        done, total = progress.get("done", 0), progress.get("budget") or 0
        width = 30
        filled = int(width * done / total) if total else 0
        best = study.get("best_score")
        best_text = "" if best is None else f"  best {study.get('objective_name')}={best:.4g}"
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} trials{best_text}", end="", file=sys.stderr)

    # -- results -------------------------------------------------------------------------------
    def _ranked(self, n: int) -> list[dict[str, Any]]:
        if self.study_id is None:
            raise RuntimeError("call search() first")
        return self.client.leaderboard(self.study_id, limit=max(1, n))["items"][:n]

    def get_best_hyperparameters(self, num_trials: int = 1) -> list[RemoteHyperParameters]:
        """The best trials' values, best first (Keras Tuner's bookkeeping ``tuner/*`` values left out)."""
        return [
            RemoteHyperParameters({k: v for k, v in row["hyperparameters"].items() if not k.startswith("tuner/")})
            for row in self._ranked(num_trials)
        ]

    def get_best_models(self, num_models: int = 1) -> list[Any]:
        """Download the best trials' trained ``.keras`` models and load them (this imports Keras)."""
        import keras

        import tuner_service.hypermodel  # noqa: F401 - registers the MLP's custom loss for loading

        models = []
        for row in self._ranked(num_models):
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"trial-{row['number']}.keras"
                response = self.client.http.get(
                    f"{self.client.base_url}/api/v1/studies/{self.study_id}/trials/{row['number']}/model",
                    timeout=self.client.timeout,
                )
                if response.status_code >= 400:
                    raise ApiError(response.status_code, response.json())
                path.write_bytes(response.content)
                models.append(keras.saving.load_model(path))
        return models

    def results_summary(self, num_trials: int = 10) -> None:
        """Print the best trials as Keras Tuner does."""
        rows = self._ranked(num_trials)
        study = self.client.study(self.study_id)  # type: ignore[arg-type]
        print("Results summary")
        print(f"Results in {self.client.base_url}/studies/{self.study_id}")
        print(f"Showing {len(rows)} best trials")
        print(f'Objective(name="{study["objective_name"]}", direction="{study["direction"]}")')
        for row in rows:
            print(f"\nTrial {row['number']} summary\nHyperparameters:")
            for name, value in row["hyperparameters"].items():
                print(f"{name}: {value}")
            print(f"Score: {row['score']}")


def npz_bytes(x: Any, y: Any, validation_data: tuple[Any, Any] | None) -> tuple[bytes, str]:
    """The arrays as a .npz archive whose bytes depend only on the data, and their SHA-256 (the data set key).

    numpy.savez stamps the current time into the archive; this writer does not, so the same arrays
    always give the same key and are uploaded only once.
    """
    arrays = {"x_train": np.asarray(x), "y_train": np.asarray(y)}
    if validation_data is not None:
        arrays["x_val"], arrays["y_val"] = (np.asarray(a) for a in validation_data[:2])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _objective(objective: Any) -> dict[str, Any]:
    """A metric name, ``{"name", "direction"}``, or a ``keras_tuner.Objective`` (read by its attributes)."""
    if isinstance(objective, str):
        return {"name": objective}
    if isinstance(objective, dict):
        return objective
    return {"name": objective.name, "direction": objective.direction}


def _early_stopping(callbacks: list[Any], epochs: int, objective: str | None) -> dict[str, Any]:
    """Keras' ``EarlyStopping`` becomes the study's early stopping; other callbacks cannot run remotely."""
    early: dict[str, Any] = {"max_epochs": epochs, "patience": max(epochs, 1)}  # none given: train every epoch
    for callback in callbacks:
        if type(callback).__name__ != "EarlyStopping":
            raise ValueError(f"{type(callback).__name__} cannot run on the service's workers; only EarlyStopping")
        monitor = getattr(callback, "monitor", None)
        if objective is not None and monitor not in (None, objective):
            warnings.warn(
                f"EarlyStopping monitors {monitor!r}; the service stops on the objective {objective!r}", stacklevel=3
            )
        early["patience"] = int(callback.patience)
        early["min_delta"] = abs(float(callback.min_delta))
        early["restore_best_weights"] = bool(callback.restore_best_weights)
    return early
