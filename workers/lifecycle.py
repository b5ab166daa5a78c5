"""A worker process's life: warm up before taking work, stop gracefully, and recycle itself.

* ``worker_init``: import Keras (and TensorFlow), run one tiny fit and load the built-in data sets before the
  worker consumes its first message, so a claimed trial starts training at once instead of 5-10 s later.
* ``worker_shutting_down`` (SIGTERM/SIGINT): the running trial is handed back at its next epoch end
  (:mod:`tuner_service.shutdown`), within ``TUNER_SHUTDOWN_GRACE`` seconds.
* Recycling: Celery's ``worker_max_tasks_per_child``/``worker_max_memory_per_child`` act on prefork children
  only, and trials run in the solo pool's main process. So after each trial the process counts its trials and
  its resident memory and, past ``TUNER_MAX_TRIALS_PER_PROCESS`` or ``TUNER_MAX_MEMORY_MB``, stops warmly;
  its launcher (``tuner-service worker``/``up``) starts a fresh process in its slot.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time

from celery import signals
from celery.worker import state as worker_state

from tuner_service import shutdown
from tuner_service.config import Settings, load_settings

log = logging.getLogger(__name__)
RECYCLE_EXIT_CODE = 75  # EX_TEMPFAIL: "start me again"; the launcher restarts any worker that exits by itself

_trials_done = 0


_warm_up_s: float | None = None


@signals.worker_init.connect
def _warm_up(**_kwargs: object) -> None:
    global _warm_up_s
    if not load_settings().worker_warm_up:
        limit_gpu_memory()  # the warm-up does it first otherwise; a cold worker is held to its share too
        return
    started = time.monotonic()
    try:
        warm_up()
    except Exception as exc:  # noqa: BLE001 - a cold worker still works, just slower on its first trial
        log.warning("warm-up failed (the first trial will start slower): %s", exc)
        return
    _warm_up_s = time.monotonic() - started


@signals.worker_ready.connect
def _report_warm_up(**_kwargs: object) -> None:
    # Logging is configured only after worker_init: say how long the warm-up took once it is.
    if _warm_up_s is not None:
        log.info("warmed up (Keras %s backend, data cache) in %.1f s", _backend(), _warm_up_s)


def _backend() -> str:
    import keras

    return keras.backend.backend()


def warm_up(settings: Settings | None = None) -> None:
    """Import the training stack, initialise the backend with one tiny fit, and split the default data set
    (``digits``, 20 % validation, seed 0) into the per-process cache, as most studies' first trial needs it."""
    import keras
    import numpy as np

    from tuner_service.datasets import describe_builtin, load_split
    from tuner_service.training import freeze_heap  # importing it imports Keras and initialises the backend

    settings = settings or load_settings()
    limit_gpu_memory()

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=1, verbose=0)
    keras.backend.clear_session()
    load_split(describe_builtin("digits"), settings.artifacts, validation_fraction=0.2, seed=0)
    freeze_heap()


def limit_gpu_memory() -> None:
    """Hold this process to its share of the GPU (``TUNER_GPU_MEMORY_FRACTION``, set by ``--per-gpu K``).

    JAX reads its XLA_PYTHON_CLIENT_* variables (set by the launcher) itself; TensorFlow gets a logical
    device of that size, which its allocator grows into on demand (``TF_FORCE_GPU_ALLOW_GROWTH``, set by the
    launcher: memory growth alone would let one process take the whole GPU); PyTorch a per-process fraction.
    Must run before the backend touches the GPU, which is why it runs first in the warm-up.
    """
    fraction = float(os.environ.get("TUNER_GPU_MEMORY_FRACTION") or 0)
    if not fraction or not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(fraction, 0)
    elif backend == "tensorflow":
        total_mb = _gpu_total_mb(os.environ["CUDA_VISIBLE_DEVICES"].split(",")[0])
        if total_mb is None:
            return
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU")[:1]:
            limit = tf.config.LogicalDeviceConfiguration(memory_limit=int(total_mb * fraction))
            tf.config.set_logical_device_configuration(gpu, [limit])


def _gpu_total_mb(index: str) -> float | None:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "-i", index, "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    try:
        return float(subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout.split()[0])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


@signals.worker_shutting_down.connect
def _on_shutdown(**_kwargs: object) -> None:
    shutdown.request(load_settings().shutdown_grace_s)


@signals.worker_shutdown.connect
def _exit_now(sender: object = None, **_kwargs: object) -> None:
    # Celery sends this once the consumer is closed and every ack is flushed: nothing is left to do but
    # tearing down the interpreter, which with TensorFlow loaded takes seconds (measured 5.4 s against
    # 1.2 s without it on 2 busy cores). Exit at once, with Celery's exit status (75 when recycling).
    code = getattr(sender, "exitcode", 0)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)


def resident_mb() -> float:
    """This process's peak resident memory in MB (Linux reports ru_maxrss in KB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def trial_done(settings: Settings, *, gpu_slots: int = 1) -> None:
    """Count a trial; stop the worker warmly once it should be recycled (the launcher starts a fresh one).

    A trial of several GPU slots always recycles: the memory the backend grew into for it stays in its
    allocator's pool until the process exits, and the GPU's other processes need it back
    (:mod:`tuner_service.gpu_slots`; they count those slots as taken until this process is gone)."""
    global _trials_done
    _trials_done += 1
    reason = recycle_reason(settings, _trials_done, resident_mb(), gpu_slots=gpu_slots)
    if reason is not None and worker_state.should_stop is None:
        log.warning("recycling this worker process: %s", reason)
        worker_state.should_stop = RECYCLE_EXIT_CODE


def recycle_reason(settings: Settings, trials: int, memory_mb: float, *, gpu_slots: int = 1) -> str | None:
    """Why a worker process that ran ``trials`` trials and holds ``memory_mb`` should be replaced, if it should
    (``gpu_slots``: the slots of its GPU the last trial took)."""
    if gpu_slots > 1:
        return f"its trial took {gpu_slots} GPU slots: the memory it grew into goes back to the GPU"
    if settings.max_trials_per_process and trials >= settings.max_trials_per_process:
        return f"{trials} trials done (limit {settings.max_trials_per_process})"
    if settings.max_memory_mb and memory_mb > settings.max_memory_mb:
        return f"{memory_mb:.0f} MB resident (limit {settings.max_memory_mb} MB)"
    return None
