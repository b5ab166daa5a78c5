"""An installed hypermodel on a team deployment (PostgreSQL store, Redis broker, a real worker process):
an uploaded image set in Keras' mnist.npz layout, a CNN study, its best model downloaded and predicting."""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import slot_of, wait_for_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("example_hypermodels", reason="pip install -e examples/hypermodels")


def mnist_layout_digits() -> tuple[bytes, np.ndarray, np.ndarray]:
    """sklearn's digits as 8-bit 8x8 images saved like keras' mnist.npz (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = (x * 15).astype(np.uint8).reshape(-1, 8, 8)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=images[:1400], y_train=y[:1400], x_test=images[1400:], y_test=y[1400:])
    return buffer.getvalue(), images[1400:], y[1400:]


def test_cnn_study_on_an_uploaded_image_set_runs_on_redis_and_postgres(team, workers) -> None:
    import keras

    settings, store, client = team
    pool = workers(settings)
    pool.start(1)
    data, x_test, y_test = mnist_layout_digits()
    upload = client.post("/api/v1/datasets", data={"file": (io.BytesIO(data), "digits-mnist.npz")})
    assert upload.status_code == 201, upload.json
    info = upload.json["info"]
    assert info["image_shape"] == [8, 8, 1] and info["has_validation_split"]

    deadline = time.monotonic() + 120
    while not any(o.name == "mnist_cnn" and o.live for o in store.hypermodel_offers(live_within_s=60)):
        assert time.monotonic() < deadline, pool.logs()
        time.sleep(0.5)
    doc = {
        "name": "cnn-upload",
        "dataset": upload.json["key"],
        "task": "multiclass",
        "objective": "val_accuracy",
        "model": {"hypermodel": "mnist_cnn", "tune_new_entries": False},
        "search_space": {"learning_rate": {"type": "choice", "values": [0.005, 0.01]}},
        "algorithm": "grid",
        "max_trials": 2,
        "early_stopping": {"patience": 1, "max_epochs": 2},
    }
    response = client.post("/api/v1/studies", json=doc)
    assert response.status_code == 201, response.json
    study = wait_for_study(store, response.json["id"], logs=pool.logs)
    assert study.status == "completed", study.error
    trials = store.list_trials(study.id, sort="number", limit=10).items
    assert sorted(t.hyperparameters["learning_rate"] for t in trials) == [0.005, 0.01]
    assert all(t.status == "completed" and slot_of(t.worker) == "w0" for t in trials)
    # The worker keeps the upload's split as .npy files that every worker process memory-maps.
    assert list((settings.artifacts / "datasets" / "splits").glob("*/x_train.npy"))

    model_file = client.get(f"/api/v1/studies/{study.id}/best-model")
    assert model_file.status_code == 200
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "best.keras"
        path.write_bytes(model_file.data)
        model = keras.saving.load_model(path)
    predictions = model.predict((x_test / 255.0).reshape(-1, 8, 8, 1), verbose=0)
    assert predictions.shape == (len(y_test), 10)
    assert float(np.mean(predictions.argmax(axis=1) == y_test)) > 0.3
