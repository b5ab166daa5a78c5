"""Per-trial overhead of an installed hypermodel: the example CNN (``examples/hypermodels``) on 8x8 digit
images, the same trials run

(a) by Keras Tuner's own ``RandomSearch`` in one fresh process (the baseline);
(b) through the service on the embedded default (one worker process that announced the hypermodel), the
    study submitted over HTTP.

Both search the same space (the learning rate; everything else at the hypermodel's defaults) for exactly
``EPOCHS`` epochs per trial. ``python -m bench.hypermodel_overhead baseline OUT TRIALS WORKDIR`` is (a)'s
child process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, ForeignCpu, fmt_s, fmt_x, md_table, ratio
from bench.service_overhead import summarize

NAME = "hypermodel_overhead"
TITLE = "Installed hypermodel (example CNN on images) against Keras Tuner in one process"
EPOCHS = 3
LEARNING_RATE = {"type": "float", "min": 1e-3, "max": 1e-2, "sampling": "log"}


def baseline(out: Path, trials: int, workdir: Path) -> None:
    """(a): RandomSearch over the CNN with the learning rate tuned and the rest fixed at its defaults."""
    import keras
    import keras_tuner as kt
    from example_hypermodels.cnn import CNNHyperModel

    from tuner_service.datasets import describe_builtin, load_split

    info = describe_builtin("digits_images")
    split = load_split(info, workdir, validation_fraction=0.2, seed=0, task_type="multiclass")
    x_train, x_val = split.x_train.reshape(-1, 8, 8, 1), split.x_val.reshape(-1, 8, 8, 1)
    events: list[dict[str, Any]] = []
    epoch_ends: list[float] = []

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            epoch_ends.append(time.time())

    class Timed(kt.RandomSearch):
        def on_trial_begin(self, trial: Any) -> None:
            events.append({"start": time.time(), "first": len(epoch_ends)})
            super().on_trial_begin(trial)

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)
            events[-1]["end"] = time.time()
            events[-1]["epoch_ends"] = epoch_ends[events[-1].pop("first") :]

    hp = kt.HyperParameters()
    hp.Float("learning_rate", LEARNING_RATE["min"], LEARNING_RATE["max"], sampling="log")
    tuner = Timed(
        CNNHyperModel(input_shape=(8, 8, 1), num_classes=10),
        objective="val_accuracy",
        max_trials=trials,
        hyperparameters=hp,
        tune_new_entries=False,
        seed=1,
        directory=str(workdir),
        project_name="cnn",
        overwrite=True,
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=100, restore_best_weights=True)
    tuner.search(
        x_train, split.y_train, validation_data=(x_val, split.y_val), epochs=EPOCHS, callbacks=[stop, EpochClock()]
    )
    best = tuner.oracle.get_best_trials(1)[0].score
    out.write_text(json.dumps({"trials": events, "best_score": best}))


def run_baseline(trials: int, workdir: Path) -> dict[str, Any]:
    out = workdir / "kt.json"
    (workdir / "kt").mkdir()
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "bench.hypermodel_overhead", "baseline", str(out), str(trials), str(workdir / "kt")],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=900,
    )
    raw = json.loads(out.read_text())
    timeline = [{**t, "status": "completed"} for t in raw["trials"]]
    return {**summarize(timeline, origin=started), "best_score": raw["best_score"]}


def study_doc(trials: int) -> dict[str, Any]:
    return {
        "name": "bench-cnn",
        "dataset": "builtin:digits_images",
        "task": "multiclass",
        "objective": {"name": "val_accuracy", "direction": "max"},
        "model": {"hypermodel": "mnist_cnn", "tune_new_entries": False},
        "search_space": {"learning_rate": LEARNING_RATE},
        "algorithm": "random",
        "max_trials": trials,
        "seed": 1,
        "early_stopping": {"patience": 100, "max_epochs": EPOCHS},
    }


def _announced(client: Any) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        items = client._call("GET", "/api/v1/hypermodels")["items"]
        if any(i["name"] == "mnist_cnn" and i["live"] for i in items):
            return
        time.sleep(0.3)
    raise RuntimeError("the worker did not announce mnist_cnn (pip install -e examples/hypermodels)")


def run(quick: bool) -> dict[str, Any]:
    from bench.service_overhead import run_service
    from tuner_service.config import load_settings

    trials = 3 if quick else 12
    modes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-hypermodel-") as tmp:
        root = Path(tmp)
        for key, fn in (
            ("kt", lambda: run_baseline(trials, root)),
            (
                "embedded",
                lambda: run_service(
                    load_settings({"TUNER_HOME": str(root / "embedded")}),
                    trials,
                    "bench-cnn",
                    doc=study_doc(trials),
                    ready=_announced,
                ),
            ),
        ):
            print(f"[bench]   {key}", flush=True)
            others = ForeignCpu()
            modes[key] = fn()
            modes[key]["interference"] = others.stop()
    for data in modes.values():
        data["per_trial_ratio"] = ratio(data["per_trial_s"], modes["kt"]["per_trial_s"])
    return {"trials": trials, "epochs": EPOCHS, "modes": modes}


def markdown(result: dict[str, Any]) -> str:
    modes = result["modes"]
    a, b = modes["kt"], modes["embedded"]
    rows = [
        ["best val_accuracy", f"{a['best_score']:.4f}", f"{b['best_score']:.4f}"],
        ["CPU used by other processes meanwhile", *(f"{m['interference']['foreign_cpu_s']:.1f} s" for m in (a, b))],
        ["**per trial** (first trial start → last trial end, / trials)",
         f"**{fmt_s(a['per_trial_s'])}** (1.00×)", f"**{fmt_s(b['per_trial_s'])}** ({fmt_x(b['per_trial_ratio'])})"],
        ["finish → next start, mean", fmt_s(a["gap_mean_s"]), fmt_s(b["gap_mean_s"])],
        ["start → epoch 1 reported (build, trace, epoch 1), median of trials 2..n",
         fmt_s(a["first_epoch_p50_s"]), fmt_s(b["first_epoch_p50_s"])],
        ["one further epoch, median", fmt_s(a["epoch_step_p50_s"]), fmt_s(b["epoch_step_p50_s"])],
        ["last epoch → finish, median", fmt_s(a["after_last_epoch_p50_s"]), fmt_s(b["after_last_epoch_p50_s"])],
    ]  # fmt: skip
    headers = [f"{result['trials']} trials × {result['epochs']} epochs", "(a) Keras Tuner, one process", "(b) service"]
    return (
        "The example package's `mnist_cnn` (`CNNHyperModel`, its own `fit` choosing the batch size) on "
        "`builtin:digits_images` (8×8×1, validation fraction 0.2), the learning rate tuned (log 1e-3..1e-2) and "
        "everything else at the hypermodel's defaults (`tune_new_entries=False`), exactly "
        f"{result['epochs']} epochs per trial. (a) `keras_tuner.RandomSearch` in one fresh process; (b) a "
        "`LocalService` whose worker announced the hypermodel, the study submitted over HTTP; per-trial "
        "phases from trial and epoch timestamps as in `service_overhead`.\n\n" + md_table(headers, rows)
    )


if __name__ == "__main__" and sys.argv[1:2] == ["baseline"]:
    baseline(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
