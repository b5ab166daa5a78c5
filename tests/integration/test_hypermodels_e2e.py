"""Installed hypermodels end to end on the embedded default: a real `tuner-service up` whose worker has the
example package installed announces its hypermodels; a CNN study on 8x8 digit images runs with early
stopping and a Hyperband promotion; its best model downloads and predicts; RemoteTuner drives the same
service like Keras Tuner, importing no TensorFlow until a model is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.conftest import running_up
from tuner_service.config import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("example_hypermodels", reason="pip install -e examples/hypermodels")


def wait_for_hypermodel(http: requests.Session, base: str, name: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Workers announce their hypermodels once they have built each on a small input."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        items = http.get(base + "/api/v1/hypermodels", timeout=10).json()["items"]
        found = [i for i in items if i["name"] == name and i["live"]]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no live worker announced {name} within {timeout_s} s")


def wait_done(http: requests.Session, base: str, study_id: int, timeout_s: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        study = http.get(f"{base}/api/v1/studies/{study_id}", timeout=10).json()
        if study["status"] in ("completed", "failed", "cancelled"):
            return study
        time.sleep(0.5)
    raise AssertionError(f"study {study_id} did not finish in {timeout_s} s")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, requests.Session, Path]]:
    home = tmp_path_factory.mktemp("hypermodels")
    settings = load_settings({"TUNER_HOME": str(home / "home"), "TUNER_HEARTBEAT_TIMEOUT": "30"})
    log = home / "up.log"
    with running_up(settings, log) as base:
        http = requests.Session()
        http.headers["Authorization"] = "Bearer " + (settings.home / "admin-token").read_text().strip()
        wait_for_hypermodel(http, base, "mnist_cnn")
        yield base, http, log


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).reshape(-1, 8, 8, 1).astype(np.float32), y.astype(np.int32)


def cnn_study(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "cnn-digits",
        "dataset": "builtin:digits_images",
        "task": {"type": "multiclass"},
        "objective": {"name": "val_accuracy", "direction": "max"},
        "model": {"hypermodel": "mnist_cnn", "tune_new_entries": False},
        "search_space": {
            "learning_rate": {"type": "float", "min": 3e-3, "max": 1e-2, "sampling": "log"},
            "filters_0": {"type": "choice", "values": [8, 16]},
        },
        "algorithm": {"name": "hyperband", "max_epochs": 2, "factor": 2},
        "seed": 3,
        "early_stopping": {"patience": 1, "max_epochs": 2},
    }
    doc.update(overrides)
    return doc


def test_workers_announce_the_installed_hypermodels(service) -> None:
    base, http, _log = service
    items = {i["name"]: i for i in http.get(base + "/api/v1/hypermodels", timeout=10).json()["items"]}
    cnn, wide = items["mnist_cnn"], items["wide_deep"]
    assert cnn["package"] == "tuner-service-example-hypermodels" and cnn["version"] == "0.1.0"
    assert cnn["input_kinds"] == ["images"] and wide["input_kinds"] == ["vectors"]
    # batch_size is declared in the HyperModel's fit, filters_1 only when conv_blocks is 2: both recorded.
    assert {"conv_blocks", "filters_0", "filters_1", "learning_rate", "batch_size"} <= set(cnn["search_space"])
    assert {"units_0", "units_1", "units_2"} <= set(wide["search_space"])
    assert items["mlp"]["input_kinds"] == ["vectors", "images"]
    assert [w["live"] for w in cnn["workers"]] == [True]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": {"hypermodel": "resnet9000"}}, "model.hypermodel"),
        ({"search_space": {"kernel_size": {"type": "int", "min": 3, "max": 5}}}, "search_space.kernel_size"),
        ({"model": {"hypermodel": "wide_deep"}, "search_space": {}}, "dataset"),
        ({"search_space": {"filters_0": {"type": "int", "min": 64, "max": 8}}}, "search_space.filters_0.min"),
    ],
)
def test_a_study_the_registry_cannot_serve_is_a_422_naming_the_field(service, change, field) -> None:
    base, http, _log = service
    response = http.post(base + "/api/v1/studies", json=cnn_study(**change), timeout=10)
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert field in [e["field"] for e in response.json()["errors"]], response.text


def test_cnn_hyperband_study_on_images_promotes_and_its_best_model_predicts(service) -> None:
    import keras

    base, http, log = service
    response = http.post(base + "/api/v1/studies", json=cnn_study(), timeout=10)
    assert response.status_code == 201, response.text
    study = wait_done(http, base, response.json()["id"])
    assert study["status"] == "completed", log.read_text()[-5000:]
    model = study["spec"]["model"]
    assert (model["target"], model["version"]) == ("example_hypermodels.cnn:CNNHyperModel", "0.1.0")
    trials = http.get(f"{base}/api/v1/studies/{study['id']}/trials", timeout=10).json()["items"]
    assert len(trials) == 5 and {t["status"] for t in trials} == {"completed"}, trials
    for trial in trials:
        values = trial["hyperparameters"]
        # tune_new_entries false: what the study did not name stays at the hypermodel's defaults.
        assert (values["conv_blocks"], values["dense_units"], values["batch_size"]) == (1, 32, 32)
        assert 3e-3 <= values["learning_rate"] <= 1e-2 and values["filters_0"] in (8, 16)
    promoted = [t for t in trials if "tuner/trial_id" in t["hyperparameters"]]
    assert promoted, "Hyperband promoted no trial"
    assert all(t["hyperparameters"]["tuner/initial_epoch"] == 1 for t in promoted)
    assert all(t["best_epoch"] is not None and t["best_epoch"] >= 1 for t in promoted)

    # A rerun retrains a first-round trial with its own seed through the same hypermodel.
    first_round = next(t for t in trials if "tuner/trial_id" not in t["hyperparameters"])
    rerun_url = f"{base}/api/v1/studies/{study['id']}/trials/{first_round['number']}/rerun"
    job = http.post(rerun_url, json={"repeats": 1}, timeout=10).json()
    deadline = time.monotonic() + 120
    while job["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
        job = http.get(f"{rerun_url.removesuffix('/rerun')}/reruns/{job['id']}", timeout=10).json()
    assert job["status"] == "completed", job
    assert job["result"]["same_seed"]["score"] == pytest.approx(first_round["score"], abs=0.05)

    model_bytes = http.get(f"{base}/api/v1/studies/{study['id']}/best-model", timeout=30)
    assert model_bytes.status_code == 200
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "best.keras"
        path.write_bytes(model_bytes.content)
        model = keras.saving.load_model(path)
    x, y = digit_images()
    predictions = model.predict(x[:300], verbose=0)
    assert predictions.shape == (300, 10)
    assert float(np.mean(predictions.argmax(axis=1) == y[:300])) > 0.5


def test_remote_tuner_searches_like_keras_tuner(service, capsys) -> None:
    from example_hypermodels.cnn import CNNHyperModel
    from keras.callbacks import EarlyStopping

    from tuner_service.client import RemoteTuner

    base, http, log = service
    token = http.headers["Authorization"].removeprefix("Bearer ")
    x, y = digit_images()
    tuner = RemoteTuner(
        hypermodel=CNNHyperModel,  # the installed class: matched to the name its workers announced
        objective="val_accuracy",
        max_trials=2,
        algorithm="random",
        url=base,
        token=token,
        hyperparameters={"learning_rate": {"type": "float", "min": 3e-3, "max": 1e-2, "sampling": "log"}},
        tune_new_entries=False,
        seed=5,
        progress=False,
    )
    # No epoch can improve accuracy by a whole 1.0: early stopping ends every trial after 1 + patience epochs.
    early = EarlyStopping(monitor="val_accuracy", patience=1, min_delta=1.0)
    tuner.search(x[:1400], y[:1400], validation_data=(x[1400:], y[1400:]), epochs=4, callbacks=[early])
    assert tuner.study["status"] == "completed", log.read_text()[-5000:]
    board = http.get(f"{base}/api/v1/studies/{tuner.study_id}/leaderboard", timeout=10).json()["items"]
    best = tuner.get_best_hyperparameters(2)
    assert [hp.values for hp in best] == [row["hyperparameters"] for row in board]
    spec = http.get(f"{base}/api/v1/studies/{tuner.study_id}", timeout=10).json()["spec"]
    assert spec["early_stopping"] == {"patience": 1, "min_delta": 1.0, "max_epochs": 4, "restore_best_weights": False}
    assert spec["dataset"].startswith("sha256:")
    trials = http.get(f"{base}/api/v1/studies/{tuner.study_id}/trials", timeout=10).json()["items"]
    assert [t["epochs_run"] for t in trials] == [2, 2], "early stopping should have ended both trials at epoch 2"
    assert spec["model"]["hypermodel"] == "mnist_cnn"
    tuner.results_summary(1)
    summary = capsys.readouterr().out
    assert 'Objective(name="val_accuracy", direction="max")' in summary
    assert f"Trial {board[0]['number']} summary" in summary and f"Score: {board[0]['score']}" in summary
    (model,) = tuner.get_best_models(1)
    assert model.predict(x[:5], verbose=0).shape == (5, 10)


SCRIPT = """
import json, sys
import numpy as np
from sklearn.datasets import load_digits
from tuner_service.client import RemoteTuner

x, y = load_digits(return_X_y=True)
x = (x / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
tuner = RemoteTuner(hypermodel="mnist_cnn", objective="val_accuracy", max_trials=1, url=sys.argv[1],
                    token=sys.argv[2], hyperparameters={"learning_rate": {"type": "fixed", "value": 0.005}},
                    tune_new_entries=False, progress=False)
tuner.search(x, y, validation_split=0.2, epochs=1)
best = tuner.get_best_hyperparameters(1)[0].values
before = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
tuner.get_best_models(1)
after = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
print(json.dumps({"before": before, "after": after, "best": best, "study": tuner.study_id}))
"""


def test_remote_tuner_imports_no_tensorflow_until_a_model_is_loaded(service) -> None:
    base, http, log = service
    token = http.headers["Authorization"].removeprefix("Bearer ")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, base, token], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:] + log.read_text()[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["before"] == [] and result["after"] == ["keras", "tensorflow"]
    assert result["best"]["learning_rate"] == 0.005


INTERRUPTED = """
import faulthandler
import signal
import sys
import numpy as np

faulthandler.register(signal.SIGUSR1)  # the test asks for the stack if Ctrl-C is not answered in time
# Ctrl-C as in a terminal: a suite started in the background by a script inherits SIGINT ignored, and so would
# this process, which then never sees the Ctrl-C the test sends.
signal.signal(signal.SIGINT, signal.default_int_handler)
from tuner_service.client import RemoteTuner

rng = np.random.default_rng(0)
x, y = rng.random((200, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, size=200)
tuner = RemoteTuner(hypermodel="mnist_cnn", objective="val_accuracy", max_trials=50, url=sys.argv[1],
                    token=sys.argv[2], project_name="interrupted", poll_s=0.2)
tuner.search(x, y, validation_split=0.2, epochs=20)
"""


def test_ctrl_c_in_remote_tuner_search_cancels_the_study(service) -> None:
    import signal

    base, http, _log = service
    token = http.headers["Authorization"].removeprefix("Bearer ")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, base, token], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        deadline = time.monotonic() + 120
        study = None
        while study is None or study["status"] != "running":
            assert time.monotonic() < deadline and child.poll() is None, child.stderr.read().decode()[-2000:]
            items = http.get(base + "/api/v1/studies", timeout=10).json()["items"]
            study = next((s for s in items if s["name"] == "interrupted"), None)
            time.sleep(0.3)
        with open(f"/proc/{child.pid}/status") as status:
            signals = [line.strip() for line in status if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
        child.send_signal(signal.SIGINT)
        try:
            _out, err = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGUSR1)
            time.sleep(1)
            child.kill()
            _out, err = child.communicate()
            raise AssertionError(f"no exit 60 s after Ctrl-C; {signals}; stack:\n{err.decode()[-3000:]}") from None
    finally:
        child.kill()
    assert child.returncode != 0 and "KeyboardInterrupt" in err.decode()
    assert f"study {study['id']} cancelled" in err.decode()
    assert http.get(f"{base}/api/v1/studies/{study['id']}", timeout=10).json()["status"] == "cancelled"
