"""Trials per hour for small MLPs on digits: one trial process per device against several sharing it.

The question is for GPU workers (is one GPU better used by one worker process or by several, as with
``TUNER_GPU_WORKERS``-style packing?). The same code measures the CPU analogue: one process using every core
against two processes sharing them. Keras runs on TensorFlow when it is installed, on JAX otherwise.

Each configuration gets the same fixed list of trials (configurations drawn from the classic search space,
a fixed number of epochs each, no early stopping), handed out one by one to its processes through claim
files, after every process has imported Keras, loaded the data and trained one warm-up model; trials per
hour is the list's length over the time from the common start to the last trial's end.

``python -m bench.gpu_packing child WORKDIR INDEX THREADS`` is one such process.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, fmt_x, md_table, ratio, wait_until

NAME = "gpu_packing"
TITLE = "GPU packing: one trial process per device or several sharing it"
NO_GPU = "not run: no GPU on this machine"


def backend() -> str:
    import importlib.util

    return "tensorflow" if importlib.util.find_spec("tensorflow") is not None else "jax"


def detect_gpus() -> dict[str, Any]:
    """GPUs seen by ``nvidia-smi -L`` and by the Keras backend (both must see one to run the GPU table)."""
    found: dict[str, Any] = {"nvidia_smi": None, "backend_gpus": 0, "names": []}
    smi = shutil.which("nvidia-smi")
    if smi is None:
        found["nvidia_smi"] = "not installed"
        return found
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
        found["names"] = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
        found["nvidia_smi"] = f"{len(found['names'])} GPU(s)"
    except (OSError, subprocess.SubprocessError) as exc:
        found["nvidia_smi"] = f"failed: {exc}"
        return found
    if found["names"]:
        probe = (
            "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
            if backend() == "tensorflow"
            else "import jax; print(sum(d.platform == 'gpu' for d in jax.devices()))"
        )
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        try:
            found["backend_gpus"] = int(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            found["backend_gpus"] = 0
    return found


def trial_list(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Configurations from the classic space (hidden layers 0..8, 16..256 neurons log, lr 1e-4..1e-2 log)."""
    rng = random.Random(seed)
    return [
        {
            "hidden_layers": rng.randint(0, 8),
            "neurons": int(round(2 ** rng.uniform(4, 8))),
            "learning_rate": 10 ** rng.uniform(-4, -2),
            "optimizer": rng.choice(["sgd", "adam"]),
            "batch_size": rng.choice([32, 64, 128]),
        }
        for _ in range(count)
    ]


# -- one process ----------------------------------------------------------------------------------------


def child(workdir: Path, index: int, threads: int) -> None:
    spec = json.loads((workdir / "spec.json").read_text())
    if backend() == "tensorflow":
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        devices = [d.name for d in tf.config.list_physical_devices()]
    else:
        import jax

        devices = [str(d) for d in jax.devices()]
    import keras

    from tuner_service.datasets import describe_builtin, load_split, output_units
    from tuner_service.hypermodel import build_model, normalization_stats
    from tuner_service.task import TaskSpec

    task = TaskSpec.from_json({"type": "multiclass"})
    info = describe_builtin("digits")
    split = load_split(info, workdir, validation_fraction=0.2, seed=0, task_type="multiclass")
    norm = normalization_stats(split.x_train)

    def train(values: dict[str, Any], epochs: int) -> float:
        keras.backend.clear_session()
        model = build_model(task, values, n_features=info.n_features, n_outputs=output_units(info, "multiclass"),
                            norm_stats=norm)  # fmt: skip
        history = model.fit(
            split.x_train,
            split.y_train,
            validation_data=(split.x_val, split.y_val),
            epochs=epochs,
            batch_size=values["batch_size"],
            verbose=0,
        )
        return float(history.history["val_accuracy"][-1])

    train(spec["trials"][0], 1)  # warm-up: one-off initialisation is not part of the throughput
    (workdir / f"ready-{index}").write_text(json.dumps(devices))
    while not (workdir / "go").exists():
        time.sleep(0.01)
    done = []
    claims = workdir / "claims"
    for number, values in enumerate(spec["trials"]):
        try:
            os.close(os.open(claims / str(number), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        start = time.time()
        score = train(values, spec["epochs"])
        done.append({"trial": number, "start": start, "end": time.time(), "val_accuracy": score})
    (workdir / f"done-{index}.json").write_text(json.dumps(done))


# -- the benchmark --------------------------------------------------------------------------------------


def run_config(root: Path, label: str, processes: int, threads: int, *, gpu: bool, spec: dict[str, Any]) -> dict:
    workdir = root / label.replace(" ", "-").replace(",", "")
    (workdir / "claims").mkdir(parents=True)
    (workdir / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "KERAS_BACKEND": backend(), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    if gpu:
        env.update({"CUDA_VISIBLE_DEVICES": "0", "TF_FORCE_GPU_ALLOW_GROWTH": "true",
                    "XLA_PYTHON_CLIENT_PREALLOCATE": "false"})  # fmt: skip
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    logs = [open(workdir / f"child-{i}.log", "wb") for i in range(processes)]  # noqa: SIM115 - closed below
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.gpu_packing", "child", str(workdir), str(i), str(threads)],
            env=env,
            cwd=REPO,
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i in range(processes)
    ]
    try:
        ready = wait_until(
            lambda: (
                all((workdir / f"ready-{i}").exists() for i in range(processes))
                or any(p.poll() not in (None, 0) for p in procs)
            ),
            180,
        )
        if not ready or any(p.poll() not in (None, 0) for p in procs):
            log = (workdir / "child-0.log").read_text()[-2000:]
            raise RuntimeError(f"{label}: a process did not get ready:\n{log}")
        go = time.time()
        (workdir / "go").write_text("")
        for p in procs:
            p.wait(timeout=900)
        if any(p.returncode != 0 for p in procs):
            raise RuntimeError(f"{label} failed:\n{(workdir / 'child-0.log').read_text()[-2000:]}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for handle in logs:
            handle.close()
    trials = [t for i in range(processes) for t in json.loads((workdir / f"done-{i}.json").read_text())]
    devices = json.loads((workdir / "ready-0").read_text())
    wall = max(t["end"] for t in trials) - go
    return {
        "label": label,
        "processes": processes,
        "threads": threads or "default",
        "trials": len(trials),
        "wall_s": wall,
        "trials_per_hour": len(trials) / wall * 3600,
        "per_process": [sum(1 for t in json.loads((workdir / f"done-{i}.json").read_text())) for i in range(processes)],
        "mean_trial_s": sum(t["end"] - t["start"] for t in trials) / len(trials),
        "devices": devices,
    }


def run(quick: bool) -> dict[str, Any]:
    count, epochs = (2, 1) if quick else (16, 4)
    spec = {"trials": trial_list(count), "epochs": epochs}
    gpus = detect_gpus()
    has_gpu = bool(gpus["names"]) and gpus["backend_gpus"] > 0
    cpu_configs = [("1 process", 1, 0), ("2 processes", 2, 0), ("2 processes, 1 thread each", 2, 1)]
    if quick:  # the smoke run: one process against two
        cpu_configs = cpu_configs[:2]
    gpu_configs = [
        ("1 process on GPU 0", 1, 0),
        ("2 processes sharing GPU 0", 2, 0),
        ("4 processes sharing GPU 0", 4, 0),
    ]
    out: dict[str, Any] = {
        "backend": backend(),
        "cores": os.cpu_count(),
        "trials": count,
        "epochs": epochs,
        "gpus": gpus,
        "cpu": [],
        "gpu": None,
    }
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
        root = Path(tmp)
        for label, processes, threads in cpu_configs:
            print(f"[bench]   CPU: {label}", flush=True)
            out["cpu"].append(run_config(root / "cpu", label, processes, threads, gpu=False, spec=spec))
        if has_gpu:
            out["gpu"] = []
            for label, processes, threads in gpu_configs:
                print(f"[bench]   GPU: {label}", flush=True)
                out["gpu"].append(run_config(root / "gpu", label, processes, threads, gpu=True, spec=spec))
    for table in (out["cpu"], out["gpu"] or []):
        for entry in table:
            entry["ratio"] = ratio(entry["trials_per_hour"], table[0]["trials_per_hour"])
    return out


def markdown(result: dict[str, Any]) -> str:
    gpus = result["gpus"]
    setup = (
        f"{result['trials']} trials of digits MLPs drawn from the classic space (hidden layers 0..8, 16..256 "
        f"neurons, learning rate 1e-4..1e-2, sgd/adam, batch 32/64/128; fixed list, seed 0), {result['epochs']} "
        f"epochs each without early stopping, built by `tuner_service.hypermodel.build_model`; Keras on "
        f"{result['backend']}. The processes of a configuration take trials from the list one at a time; the clock "
        "starts once all of them have imported Keras, loaded the data and trained one warm-up model. Ratios are "
        "against the first row of the same table, measured in the same run. GPU detection: `nvidia-smi` "
        f"{gpus['nvidia_smi']}; GPUs seen by the backend: {gpus['backend_gpus']}."
    )

    def table(entries: list[dict[str, Any]]) -> str:
        rows = [
            [
                e["label"],
                str(e["threads"]),
                f"{e['trials']} ({' + '.join(map(str, e['per_process']))})",
                f"{e['wall_s']:.1f} s",
                f"**{e['trials_per_hour']:,.0f}** ({fmt_x(e['ratio'])})",
                f"{e['mean_trial_s']:.2f} s",
            ]
            for e in entries
        ]
        return md_table(
            ["configuration", "TF threads per process", "trials (per process)", "wall", "trials per hour",
             "mean time per trial"],
            rows,
        )  # fmt: skip

    cpu = result["cpu"]
    parts = [setup, f"**CPU ({result['cores']} cores)**", table(cpu)]
    best = max(cpu, key=lambda e: e["trials_per_hour"])
    if best["processes"] > 1:
        parts.append(
            f"On the CPU, {best['label']} gave the most trials per hour ({fmt_x(best['ratio'])} one process): models "
            "this small leave much of the machine idle inside one process (per-step Python and dispatch overhead, a "
            "validation pass per epoch, tracing each new model), and a second process fills those gaps; the mean "
            "time per trial shows what each process pays for sharing."
        )
    else:
        parts.append("On the CPU, one process using every core gave the most trials per hour.")
    parts.append("**GPU**")
    parts.append(table(result["gpu"]) if result["gpu"] else f"*{NO_GPU}.*")
    return "\n\n".join(parts)


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "child":
        child(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("usage: python -m bench.gpu_packing child WORKDIR INDEX THREADS")
