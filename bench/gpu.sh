#!/bin/sh
# Trials per hour of GPU workers through the service, with 1 and K processes per GPU, and GPU utilisation
# (bench/gpu_service.py); rewrites its section of BENCHMARKS.md. On a machine without TensorFlow use JAX:
#
#   KERAS_BACKEND=jax TUNER_BENCH_PER_GPU=4 bench/gpu.sh          # full run (48 trials x 5 epochs per K)
#   KERAS_BACKEND=jax bench/gpu.sh --quick                        # smoke-sized run
set -eu
cd "$(dirname "$0")/.."
export KERAS_BACKEND="${KERAS_BACKEND:-tensorflow}"
export PYTHONPATH="${PYTHONPATH:-$PWD}"
exec "${PYTHON:-python}" -m bench "$@" --only gpu_service
