"""Trials per hour of GPU workers through the whole service: ``tuner-service worker --gpus 0 --per-gpu K``
with K = 1 and K > 1 processes sharing one GPU (each capped at 1/K of its memory, the first at all of it:
see the README's GPU hosts), and the GPU's utilisation.

Per configuration: a fresh home (SQLite database, embedded broker), the worker command above (Keras on
``KERAS_BACKEND``: tensorflow, jax or torch), started and left until every process says it is ready; then one
study of small digits MLPs on the GPU pool (``resources: {"gpu": 1}``, parallelism K, fixed epochs, random
search over the classic space with seed 0) submitted through the service's own ``submit_study``. Trials per
hour is the study's trial count over the time from its first trial's start to its last trial's end;
utilisation is ``nvidia-smi``'s ``utilization.gpu`` sampled every second meanwhile. Ratios are against K = 1
in the same run. ``bench/gpu.sh`` runs it; without a GPU it records that it did not run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench.common import REPO, fmt_x, md_table, ratio, wait_until
from bench.gpu_packing import detect_gpus

NAME = "gpu_service"
TITLE = "GPU workers through the service: trials per hour with 1 and K processes per GPU"
NOT_RUN = "not run on a GPU yet: no GPU on the machines this has run on"


def sample_utilisation(stop: threading.Event, samples: list[float], gpu: str) -> None:
    query = ["nvidia-smi", "-i", gpu, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
    while not stop.wait(1.0):
        try:
            samples.append(float(subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.split()[0]))
        except (subprocess.SubprocessError, ValueError, IndexError, OSError):
            continue


def measure(root: Path, per_gpu: int, trials: int, epochs: int, gpu: str = "0") -> dict[str, Any]:
    from tuner_service.config import load_settings
    from tuner_service.launcher import settings_env
    from tuner_service.store import Store
    from tuner_service.study import submit_study
    from workers.app import celery_for, enqueue_trials

    home = root / f"k{per_gpu}"
    settings = load_settings({"TUNER_HOME": str(home)})
    store = Store(settings.database_url)
    store.upgrade()
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO)}
    log_path = home / "worker.log"
    command = [sys.executable, "-m", "tuner_service.cli", "worker", "--gpus", gpu, "--per-gpu", str(per_gpu)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=REPO)
    stop, samples = threading.Event(), []
    try:
        ready = wait_until(lambda: log_path.read_text(errors="replace").count(" ready.") >= per_gpu, 600, 0.2)
        if not ready:
            raise RuntimeError(f"workers not ready:\n{log_path.read_text()[-3000:]}")
        doc = {
            "name": f"gpu-k{per_gpu}",
            "dataset": "digits",
            "task": {"type": "multiclass"},
            "objective": "val_accuracy",
            "algorithm": "random",
            "seed": 0,
            "resources": {"gpu": 1},
            "parallelism": per_gpu,
            "search_space": {
                "hidden_layers": {"type": "int", "min": 0, "max": 8},
                "neurons": {"type": "int", "min": 16, "max": 256, "sampling": "log"},
                "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
                "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
                "batch_size": {"type": "choice", "values": [32, 64, 128]},
            },
            "max_trials": trials,
            "early_stopping": {"patience": epochs, "max_epochs": epochs},
        }
        sampler = threading.Thread(target=sample_utilisation, args=(stop, samples, gpu), daemon=True)
        sampler.start()
        celery = celery_for(settings)
        study = submit_study(store, settings, doc, lambda pool, n: enqueue_trials(celery, pool, n))
        if not wait_until(lambda: store.get_study(study.id).is_terminal, 7200, 0.5):
            raise RuntimeError("study did not finish")
        done = store.list_trials(study.id, sort="created", limit=trials + 10).items
        start = min(t.started_at for t in done)
        end = max(t.finished_at for t in done if t.finished_at is not None)
        wall = (end - start).total_seconds()
        return {
            "per_gpu": per_gpu,
            "trials": len(done),
            "completed": sum(t.status == "completed" for t in done),
            "wall_s": wall,
            "trials_per_hour": len(done) / wall * 3600 if wall > 0 else None,
            "gpu_util_mean": sum(samples) / len(samples) if samples else None,
            "backend": (done[0].environment or {}).get("backend"),
        }
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=300)
        store.dispose()


def run(quick: bool) -> dict[str, Any]:
    gpus = detect_gpus()
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if not gpus["names"] or not gpus["backend_gpus"]:
        return {"skipped": NOT_RUN, "detection": gpus, "backend": backend}
    k = int(os.environ.get("TUNER_BENCH_PER_GPU", "4"))
    trials = int(os.environ.get("TUNER_BENCH_TRIALS", "8" if quick else "48"))
    epochs = int(os.environ.get("TUNER_BENCH_EPOCHS", "2" if quick else "5"))
    with tempfile.TemporaryDirectory(prefix="bench-gpu-service-") as tmp:
        rows = [measure(Path(tmp), 1, trials, epochs), measure(Path(tmp), k, trials, epochs)]
    return {"rows": rows, "detection": gpus, "backend": backend, "trials": trials, "epochs": epochs}


def markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"{__doc__.strip()}\n\n*{result['skipped']}* (GPU detection: {result['detection']['nvidia_smi']})."
    base = result["rows"][0]["trials_per_hour"]
    rows = [
        [f"--per-gpu {r['per_gpu']}", f"{r['completed']} / {r['trials']}", f"{r['wall_s']:.1f} s",
         f"**{r['trials_per_hour']:,.0f}** ({fmt_x(ratio(r['trials_per_hour'], base))})",
         "n/a" if r["gpu_util_mean"] is None else f"{r['gpu_util_mean']:.0f} %"]
        for r in result["rows"]
    ]  # fmt: skip
    gpus = ", ".join(result["detection"]["names"])
    head = f"{result['trials']} trials of {result['epochs']} epochs; Keras on {result['backend']}; {gpus}"
    return f"{__doc__.strip()}\n\n{head}\n\n" + md_table(
        ["workers", "completed", "wall", "trials per hour", "mean GPU utilisation"], rows
    )
