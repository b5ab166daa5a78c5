# tuner-service: API (default command), trial workers, reaper and migrations from one image.
#
#   docker build -t tuner-service .                              # CPU TensorFlow (API, reaper, CPU workers)
#   docker build --build-arg TF_VARIANT=cuda -t tuner-service-gpu .   # GPU workers
#
# pyproject's `train` extra pins tensorflow-cpu; TF_VARIANT=cuda swaps it for the same version of
# `tensorflow[and-cuda]` (CUDA/cuDNN come as pip wheels, so the slim base needs no CUDA image; the
# host needs the NVIDIA driver and container toolkit).
FROM python:3.11-slim

ARG TF_VARIANT=cpu

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

# Dependencies first, from pyproject alone (stub packages), so code changes do not reinstall TensorFlow.
COPY pyproject.toml README.md ./
RUN mkdir -p tuner_service workers migrations \
 && touch tuner_service/__init__.py workers/__init__.py migrations/__init__.py \
 && pip install '.[train,postgres,serve]' \
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

# The package itself (dependencies are already there).
COPY tuner_service ./tuner_service
COPY workers ./workers
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install --no-deps . \
 && rm -rf build ./*.egg-info \
 && tuner-service --help >/dev/null

USER tuner
WORKDIR /data
EXPOSE 8750

CMD ["gunicorn", "--bind", "0.0.0.0:8750", "--workers", "2", "--threads", "4", "tuner_service.api.wsgi:app"]
