# tuner-service images, from one Dockerfile:
#
#   docker build --target api -t tuner-service-api .                  # API, migrations, bootstrap, reaper: no TensorFlow
#   docker build --target worker -t tuner-service-worker .            # CPU trial workers (tensorflow-cpu)
#   docker build --target worker --build-arg TF_VARIANT=cuda -t tuner-service-gpu .   # GPU trial workers
#
# pyproject's `train` extra pins tensorflow-cpu; TF_VARIANT=cuda swaps it for the same version of
# `tensorflow[and-cuda]` (CUDA/cuDNN come as pip wheels, so the slim base needs no CUDA image; the
# host needs the NVIDIA driver and container toolkit). KERAS_BACKEND=jax needs the `jax` extra.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TUNER_HOME=/data

RUN useradd --create-home --uid 1000 --user-group tuner \
 && mkdir -p /data /artifacts \
 && chown tuner:tuner /data /artifacts

WORKDIR /app
# Dependencies first, from pyproject alone (stub packages), so code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p tuner_service workers migrations \
 && touch tuner_service/__init__.py workers/__init__.py migrations/__init__.py

# -- the API image: validates, stores and enqueues; it never imports TensorFlow ------------------------
FROM base AS api
RUN pip install '.[postgres,serve]' \
 && pip uninstall -y tuner-service \
 && rm -rf tuner_service workers migrations build ./*.egg-info
COPY tuner_service ./tuner_service
COPY workers ./workers
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install --no-deps . \
 && rm -rf build ./*.egg-info \
 && tuner-service --help >/dev/null \
 && ! python -c "import tensorflow" 2>/dev/null
USER tuner
WORKDIR /data
EXPOSE 8750
# Behind a TLS proxy add --forwarded-allow-ips=<the proxy's address> so redirects and links use https.
CMD ["gunicorn", "--bind", "0.0.0.0:8750", "--workers", "2", "--threads", "4", "tuner_service.api.wsgi:app"]

# -- the worker image: trains -------------------------------------------------------------------------
FROM base AS worker
ARG TF_VARIANT=cpu
RUN pip install '.[train,postgres]' \
 && if [ "$TF_VARIANT" = "cuda" ]; then \
        tf_version="$(pip show tensorflow-cpu | sed -n 's/^Version: //p')" \
     && { [ -n "$tf_version" ] || { echo "no tensorflow-cpu installed to swap (x86_64 only)" >&2; exit 1; }; } \
     && pip uninstall -y tensorflow-cpu \
     && pip install "tensorflow[and-cuda]==${tf_version}"; \
    elif [ "$TF_VARIANT" != "cpu" ]; then \
        echo "TF_VARIANT must be cpu or cuda, not '$TF_VARIANT'" >&2; exit 1; \
    fi \
 && pip uninstall -y tuner-service \
 && rm -rf tuner_service workers migrations build ./*.egg-info
COPY tuner_service ./tuner_service
COPY workers ./workers
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install --no-deps . \
 && rm -rf build ./*.egg-info \
 && tuner-service --help >/dev/null
USER tuner
WORKDIR /data
CMD ["tuner-service", "worker", "--concurrency", "1"]
