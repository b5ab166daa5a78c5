"""docker-compose.yml as shipped: the file is valid compose, and its services' own commands, started on
this host against Redis and a fresh PostgreSQL database (no Docker), run a study, a learning-rate range
test and a rerun to completion with the token the `bootstrap` service made."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import free_port, wait_http
from tuner_service.launcher import stop_processes

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
HOST_SERVICES = ("migrate", "bootstrap", "api", "worker", "reaper")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR:-default} (and ${VAR}) against ``env``."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def compose_client() -> list[str] | None:
    """The compose client on this machine: ``docker-compose``, or ``docker compose`` where the Docker CLI has
    the plugin (a bare Docker CLI answers "unknown shorthand flag"); None without one (the schema still runs)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_the_compose_file_is_valid_and_runs_every_pool_safely() -> None:
    doc = compose()
    tool = compose_client()
    if tool is not None:
        result = subprocess.run([*tool, "-f", str(COMPOSE), "--profile", "gpu", "--profile", "monitoring", "config",
                                 "-q"], capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stderr
    if COMPOSE_SCHEMA.exists():
        import json

        import jsonschema

        jsonschema.validate(doc, json.loads(COMPOSE_SCHEMA.read_text()))
    services = doc["services"]
    cpu_workers = [s for s in services.values() if s.get("command", [])[:2] == ["tuner-service", "worker"]
                   and "--gpus" not in s["command"] and not s.get("profiles")]  # fmt: skip
    assert cpu_workers, "a worker on trials.cpu starts by default: ordinary studies, range tests and reruns"
    assert services["worker-gpu"]["profiles"] == ["gpu"] and "--gpus" in services["worker-gpu"]["command"]
    assert services["api"]["build"]["target"] == "api" and services["worker"]["build"]["target"] == "worker"
    assert all(port.startswith("127.0.0.1:") for port in services["flower"].get("ports", []))
    assert "--basic-auth" in " ".join(services["flower"]["command"])
    assert "home:/data" in services["api"]["volumes"] and "home:/data" in services["bootstrap"]["volumes"]
    grace = float(doc["x-tuner-env"]["TUNER_SHUTDOWN_GRACE"])
    assert float(services["worker"]["stop_grace_period"].rstrip("m")) * 60 > grace


def host_command(argv: list[str], port: int) -> list[str]:
    """A service's command as this host runs it: the project's Python, the API on a free local port."""
    program = {
        "tuner-service": [sys.executable, "-m", "tuner_service.cli"],
        "gunicorn": [sys.executable, "-m", "gunicorn"],
    }
    command = [*program[argv[0]], *argv[1:]]
    return [f"127.0.0.1:{port}" if arg == "0.0.0.0:8750" else arg for arg in command]


@pytest.mark.integration
@pytest.mark.slow
def test_the_compose_services_run_a_study_a_range_test_and_a_rerun(tmp_path, postgres_url, redis_url, redis_prefix):
    doc = compose()
    home, artifacts = tmp_path / "data", tmp_path / "artifacts"
    env = {k: interpolate(str(v), dict(os.environ)) for k, v in doc["x-tuner-env"].items()}
    env.update(TUNER_DATABASE_URL=postgres_url, TUNER_BROKER_URL=redis_url, TUNER_BROKER_KEY_PREFIX=redis_prefix,
               TUNER_HOME=str(home), TUNER_ARTIFACTS=str(artifacts))  # fmt: skip
    env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    port = free_port()
    commands = {name: host_command(doc["services"][name]["command"], port) for name in HOST_SERVICES}

    for one_shot in ("migrate", "bootstrap"):
        done = subprocess.run(commands[one_shot], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    token_path = home / "admin-token"
    assert f"written in {token_path}" in done.stdout
    again = subprocess.run(commands["bootstrap"], env=env, capture_output=True, text=True, timeout=120)
    assert f"kept in {token_path}" in again.stdout, "a second bootstrap keeps the first token"

    logs: dict[str, Path] = {}
    procs: dict[str, subprocess.Popen] = {}
    for name in ("api", "worker", "reaper"):
        logs[name] = tmp_path / f"{name}.log"
        with open(logs[name], "wb") as log:
            procs[name] = subprocess.Popen(commands[name], env=env, stdout=log, stderr=log)

    def tails() -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-3000:]}" for n, p in logs.items())

    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz")
        api = requests.Session()
        api.headers["Authorization"] = "Bearer " + token_path.read_text().strip()
        study = api.post(base + "/api/v1/studies", json=_small_study()).json()
        test = api.post(base + "/api/v1/lr-range-tests", json={"dataset": "digits", "task": "multiclass", "steps": 30})
        assert test.status_code == 202, test.text
        finished = _poll(lambda: api.get(f"{base}/api/v1/studies/{study['id']}").json(), "study", tails)
        assert finished["status"] == "completed", finished
        best = api.get(f"{base}/api/v1/studies/{study['id']}/trials?sort=score&limit=1").json()["items"][0]
        rerun = api.post(f"{base}/api/v1/studies/{study['id']}/trials/{best['number']}/rerun", json={"repeats": 2})
        assert rerun.status_code == 202, rerun.text
        range_test = _poll(lambda: api.get(base + test.headers["Location"]).json(), "range test", tails)
        assert range_test["status"] == "completed", range_test
        repeated = _poll(lambda: api.get(base + rerun.headers["Location"]).json(), "rerun", tails)
        assert repeated["status"] == "completed", repeated
        stopping = time.monotonic()
        procs["worker"].send_signal(signal.SIGTERM)
        procs["worker"].wait(timeout=120)
        print(f"\ncompose services on the host: study, range test and rerun completed; "
              f"idle `tuner-service worker` stopped {time.monotonic() - stopping:.1f} s after SIGTERM")  # fmt: skip
    finally:
        stop_processes(list(procs.values()), timeout=30)


def _small_study() -> dict[str, Any]:
    return {
        "name": "compose",
        "dataset": "digits",
        "task": {"type": "multiclass"},
        "objective": "val_accuracy",
        "search_space": {
            "neurons": {"type": "int", "min": 8, "max": 32},
            "learning_rate": {"type": "fixed", "value": 0.01},
        },
        "max_trials": 2,
        "early_stopping": {"patience": 1, "max_epochs": 2},
    }


def _poll(read: Any, what: str, logs: Any, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read()
        if state["status"] in ("completed", "failed", "cancelled"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"{what} did not finish within {timeout_s} s\n{logs()}")


API_WITHOUT_TRAINING = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "keras_tuner", "tensorboard", "jax", "torch"):
            raise ImportError("not in the API image: " + name)
sys.meta_path.insert(0, Block())
from tests.conftest import digits_study, make_token
from tuner_service.api import create_app
from tuner_service.config import load_settings
from tuner_service.store import Store
settings = load_settings({"TUNER_HOME": sys.argv[1]})
store = Store(settings.database_url)
store.upgrade()
client = create_app(settings, store=store, enqueue=lambda p, n: None, enqueue_job=lambda p, j: None).test_client()
client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + make_token(store, "ana")
assert client.post("/api/v1/studies", json=digits_study()).status_code == 201
assert client.post("/api/v1/lr-range-tests", json={"dataset": "digits", "task": "multiclass"}).status_code == 202
for url in ("/api/v1/studies", "/api/v1/studies/1/leaderboard", "/api/v1/queue", "/healthz", "/api/v1/openapi.json"):
    assert client.get(url).status_code == 200, url
print("ok")
"""


def test_the_api_image_needs_no_training_libraries(tmp_path) -> None:
    """The `api` image installs no TensorFlow, Keras or Keras Tuner: the API must not import them."""
    result = subprocess.run(
        [sys.executable, "-c", API_WITHOUT_TRAINING, str(tmp_path / "home")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
