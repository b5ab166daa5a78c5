"""The service-overhead baselines, each in one fresh process: same model, data and budget as the service.

``python -m bench.kt_baseline OUT.json TRIALS WORKDIR [kt|fit]`` writes wall-clock timestamps (``time.time()``)
of the imports, the data split, every trial's begin/end and every epoch's end.

- ``kt`` (the baseline): Keras Tuner's own ``RandomSearch`` over the fixed hyperparameters plus one dummy
  ``Int("trial_seed", 0, 1000)`` that the model ignores: a space of only ``Fixed`` values has one point,
  and RandomSearch stops once its space is exhausted.
- ``fit``: a plain loop of ``build_model`` + ``model.fit`` with the same callbacks and nothing saved, a lower
  bound that shows what any tuner (Keras Tuner included) adds to bare training.
"""

from __future__ import annotations

import time

PROCESS_START = time.time()

import json  # noqa: E402 - the clock starts before anything is imported
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

FIXED: dict[str, Any] = {
    "hidden_layers": 2,
    "neurons": 64,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": 64,
}
EPOCHS = 5
PATIENCE = 100
EPOCH_ENDS: list[float] = []  # module level: Keras Tuner deep-copies the callbacks for every trial
EVENTS: list[dict[str, Any]] = []


def main(out: Path, trials: int, workdir: Path, mode: str = "kt") -> None:
    t_imports = time.time()
    import keras
    import keras_tuner as kt

    from tuner_service.datasets import describe_builtin, load_split, output_units
    from tuner_service.hypermodel import build_model, normalization_stats
    from tuner_service.task import TaskSpec

    t_imported = time.time()
    task = TaskSpec.from_json({"type": "multiclass"})
    info = describe_builtin("digits")
    split = load_split(info, workdir, validation_fraction=0.2, seed=0, task_type=task.type)
    norm = normalization_stats(split.x_train)
    t_data = time.time()

    def build(hp: kt.HyperParameters) -> keras.Model:
        hp.Int("trial_seed", 0, 1000)  # only makes the trials distinct; the model ignores it
        values = {name: hp.Fixed(name, value) for name, value in FIXED.items()}
        n_outputs = output_units(info, task.type)
        return build_model(task, values, n_features=info.n_features, n_outputs=n_outputs, norm_stats=norm)

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            EPOCH_ENDS.append(time.time())

    def begin(trial_id: str) -> None:
        EVENTS.append({"trial": trial_id, "begin": time.time(), "first_epoch": len(EPOCH_ENDS)})

    def end() -> None:
        EVENTS[-1]["end"] = time.time()
        EVENTS[-1]["epoch_ends"] = EPOCH_ENDS[EVENTS[-1].pop("first_epoch") :]

    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=PATIENCE, restore_best_weights=True),
        EpochClock(),
    ]
    fit_args: dict[str, Any] = {
        "validation_data": (split.x_val, split.y_val),
        "epochs": EPOCHS,
        "batch_size": FIXED["batch_size"],
        "callbacks": callbacks,
        "verbose": 0,
    }
    t_search = time.time()
    if mode == "fit":
        scores = []
        for number in range(trials):
            begin(str(number))
            keras.utils.set_random_seed(number)
            history = build(kt.HyperParameters()).fit(split.x_train, split.y_train, **fit_args)
            scores.append(max(history.history["val_accuracy"]))
            end()
        statuses, best = ["COMPLETED"] * trials, max(scores)
    else:

        class TimedRandomSearch(kt.RandomSearch):
            def on_trial_begin(self, trial: Any) -> None:
                begin(trial.trial_id)
                super().on_trial_begin(trial)

            def on_trial_end(self, trial: Any) -> None:
                super().on_trial_end(trial)
                end()

        tuner = TimedRandomSearch(
            hypermodel=build,
            objective=kt.Objective("val_accuracy", direction="max"),
            max_trials=trials,
            seed=1,
            directory=str(workdir),
            project_name="kt-baseline",
            overwrite=True,
        )
        tuner.search(split.x_train, split.y_train, **fit_args)
        statuses = [t.status for t in tuner.oracle.trials.values()]
        best = tuner.oracle.get_best_trials(1)[0].score
    t_end = time.time()
    record = {
        "mode": mode,
        "process_start": PROCESS_START,
        "imports_start": t_imports,
        "imported": t_imported,
        "data_ready": t_data,
        "search_start": t_search,
        "search_end": t_end,
        "trials": EVENTS,
        "statuses": statuses,
        "best_score": best,
    }
    out.write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "kt")
