"""The REST API's happy paths with no worker: submit, list, show, cancel, data sets, leaderboards, docs."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import digits_study
from tuner_service.datasets import BUILTIN_NAMES
from tuner_service.space import SearchSpace

STUDIES = "/api/v1/studies"
DATASETS = "/api/v1/datasets"
REPO = Path(__file__).resolve().parents[2]

# keras_tuner.HyperParameters.get_config() of the digits space, written out by hand: the API must not
# need Keras Tuner to read it.
KERAS_TUNER_CONFIG = {
    "space": [
        {
            "class_name": "Int",
            "config": {
                "name": "hidden_layers",
                "default": None,
                "conditions": [],
                "min_value": 1,
                "max_value": 2,
                "step": 1,
                "sampling": "linear",
            },
        },
        {
            "class_name": "Int",
            "config": {
                "name": "neurons",
                "default": None,
                "conditions": [],
                "min_value": 16,
                "max_value": 64,
                "step": 2,
                "sampling": "log",
            },
        },
        {
            "class_name": "Float",
            "config": {
                "name": "learning_rate",
                "default": 0.001,
                "conditions": [],
                "min_value": 0.001,
                "max_value": 0.01,
                "step": None,
                "sampling": "log",
            },
        },
        {
            "class_name": "Choice",
            "config": {
                "name": "optimizer",
                "default": "sgd",
                "conditions": [],
                "values": ["sgd", "adam"],
                "ordered": False,
            },
        },
        {
            "class_name": "Float",
            "config": {
                "name": "momentum",
                "default": 0.0,
                "conditions": [{"class_name": "Parent", "config": {"name": "optimizer", "values": ["sgd"]}}],
                "min_value": 0.0,
                "max_value": 0.9,
                "step": None,
                "sampling": "linear",
            },
        },
        {"class_name": "Boolean", "config": {"name": "use_bias", "default": False, "conditions": []}},
        {"class_name": "Fixed", "config": {"name": "activation", "conditions": [], "value": "relu"}},
    ],
    "values": {
        "hidden_layers": 1,
        "neurons": 16,
        "learning_rate": 0.001,
        "optimizer": "sgd",
        "momentum": 0.0,
        "use_bias": False,
        "activation": "relu",
    },
}
# The same space in our own form.
SAME_SPACE = {
    "hidden_layers": {"type": "int", "min": 1, "max": 2},
    "neurons": {"type": "int", "min": 16, "max": 64, "step": 2, "sampling": "log"},
    "learning_rate": {"type": "float", "min": 0.001, "max": 0.01, "sampling": "log"},
    "optimizer": {"type": "choice", "values": ["sgd", "adam"], "ordered": False},
    "momentum": {"type": "float", "min": 0.0, "max": 0.9, "condition": {"parent": "optimizer", "values": ["sgd"]}},
    "use_bias": {"type": "boolean"},
    "activation": {"type": "fixed", "value": "relu"},
}


def submit(client, **overrides) -> dict:
    response = client.post(STUDIES, json=digits_study(**overrides))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def npz_bytes(n: int = 30) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x=rng.normal(size=(n, 4)), y=np.arange(n) % 3)
    return buf.getvalue()


def csv_bytes(n: int = 30) -> bytes:
    rows = [f"{i},{i % 4},{10 + 3.5 * i:.1f}" for i in range(n)]
    return ("area,rooms,price\n" + "\n".join(rows) + "\n").encode()


def post_file(client, content: bytes, filename: str, **form: str):
    data = {"file": (io.BytesIO(content), filename), **form}
    return client.post(DATASETS, data=data, content_type="multipart/form-data")


# --- studies --------------------------------------------------------------------------------------


def test_submit_stores_a_queued_study_and_enqueues_its_first_trials(client, recorder, store) -> None:
    response = client.post(STUDIES, json=digits_study(parallelism=2))
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"].endswith(f"{STUDIES}/{body['id']}")
    assert body["status"] == "queued"
    assert body["name"] == "digits-test"
    assert body["max_trials"] == 4
    assert body["progress"]["budget"] == 4
    assert body["progress"]["done"] == 0
    assert set(body["progress"]["trials"].values()) == {0}
    assert body["links"]["self"] == f"{STUDIES}/{body['id']}"
    assert body["spec"]["dataset"] == "builtin:digits"
    assert store.get_dataset("builtin:digits").id == body["dataset_id"]
    assert recorder.calls == [("cpu", 2)]


def test_list_filters_by_status_and_pages_newest_first(client) -> None:
    ids = [submit(client, name=f"s{i}")["id"] for i in range(3)]
    assert client.post(f"{STUDIES}/{ids[0]}/cancel").status_code == 200

    everything = client.get(STUDIES).get_json()
    assert [s["id"] for s in everything["items"]] == ids[::-1]
    assert everything["total"] == 3

    queued = client.get(f"{STUDIES}?status=queued").get_json()
    assert queued["total"] == 2
    assert {s["id"] for s in queued["items"]} == set(ids[1:])
    assert all(s["status"] == "queued" for s in queued["items"])

    page = client.get(f"{STUDIES}?limit=1&offset=1").get_json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)
    assert [s["id"] for s in page["items"]] == [ids[1]]

    dataset_id = everything["items"][0]["dataset_id"]
    assert client.get(f"{STUDIES}?dataset={dataset_id}&status=cancelled").get_json()["total"] == 1
    assert client.get(f"{STUDIES}?offset=10").get_json()["items"] == []


def test_show_one_study(client) -> None:
    created = submit(client)
    response = client.get(f"{STUDIES}/{created['id']}")
    assert response.status_code == 200
    shown = response.get_json()
    assert shown["id"] == created["id"]
    assert shown["spec"] == created["spec"]
    assert shown["progress"] == created["progress"]


def test_cancel_marks_the_study_cancelled(client, recorder) -> None:
    created = submit(client)
    response = client.post(f"{STUDIES}/{created['id']}/cancel")
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    shown = client.get(f"{STUDIES}/{created['id']}").get_json()
    assert shown["status"] == "cancelled"
    assert shown["finished_at"] is not None
    assert recorder.calls == [("cpu", 1)]  # cancelling enqueues nothing


def test_a_fresh_study_has_no_trials_and_an_empty_leaderboard(client) -> None:
    study_id = submit(client)["id"]
    trials = client.get(f"{STUDIES}/{study_id}/trials")
    assert trials.status_code == 200
    assert trials.get_json() == {"items": [], "total": 0, "limit": 50, "offset": 0}
    sorted_page = client.get(f"{STUDIES}/{study_id}/trials?sort=duration&order=desc&status=completed&limit=5")
    assert sorted_page.get_json() == {"items": [], "total": 0, "limit": 5, "offset": 0}
    board = client.get(f"{STUDIES}/{study_id}/leaderboard")
    assert board.status_code == 200
    assert board.get_json() == {"items": [], "total": 0, "limit": 20, "offset": 0}


def test_leaderboard_by_data_set_name(client) -> None:
    empty = {"items": [], "total": 0, "limit": 20, "offset": 0}
    before = client.get("/api/v1/leaderboard?dataset=digits")  # digits not even registered yet
    assert before.status_code == 200
    assert before.get_json() == empty
    submit(client)
    after = client.get("/api/v1/leaderboard?dataset=digits&task=multiclass&metric=val_accuracy")
    assert after.status_code == 200
    assert after.get_json() == empty
    assert client.get("/api/v1/leaderboard?dataset=builtin:digits&limit=3").get_json()["limit"] == 3


def test_hyperband_budget_is_the_trials_its_brackets_run(client) -> None:
    body = submit(client, algorithm={"name": "hyperband", "max_epochs": 9, "factor": 3})
    assert body["max_trials"] == 23
    assert body["progress"]["budget"] == 23
    assert body["spec"]["algorithm"] == {"name": "hyperband", "max_epochs": 9, "factor": 3}


def test_keras_tuner_config_is_accepted_as_search_space(client) -> None:
    body = submit(client, search_space=KERAS_TUNER_CONFIG)
    assert body["spec"]["search_space"] == SearchSpace.from_json(SAME_SPACE).to_json()


# --- data sets ------------------------------------------------------------------------------------


def test_upload_npz_and_csv_idempotently_then_list_and_show(client, settings, store) -> None:
    npz = post_file(client, npz_bytes(), "points.npz")
    assert npz.status_code == 201, npz.get_data(as_text=True)
    npz_body = npz.get_json()
    assert npz.headers["Location"].endswith(f"{DATASETS}/{npz_body['id']}")
    assert npz_body["key"].startswith("sha256:")
    assert npz_body["info"]["n_samples"] == 30
    assert npz_body["info"]["n_features"] == 4
    assert npz_body["info"]["target_kind"] == "multiclass"
    assert (settings.artifacts / npz_body["info"]["path"]).read_bytes() == npz_bytes()

    csv = post_file(client, csv_bytes(), "houses.csv", target_column="price")
    assert csv.status_code == 201, csv.get_data(as_text=True)
    csv_body = csv.get_json()
    assert csv_body["info"]["target_column"] == "price"
    assert csv_body["info"]["n_features"] == 2
    assert csv_body["info"]["target_kind"] == "continuous"

    again = post_file(client, npz_bytes(), "renamed.npz")
    assert again.status_code == 201
    assert again.get_json()["id"] == npz_body["id"]
    assert post_file(client, csv_bytes(), "houses.csv", target_column="price").get_json()["id"] == csv_body["id"]
    assert store.list_datasets().total == 2

    listing = client.get(DATASETS).get_json()
    assert listing["total"] == 2
    assert [d["id"] for d in listing["items"]] == [npz_body["id"], csv_body["id"]]
    assert listing["builtin"] == [f"builtin:{name}" for name in BUILTIN_NAMES]
    assert "builtin:digits" in listing["builtin"]

    shown = client.get(f"{DATASETS}/{npz_body['id']}")
    assert shown.status_code == 200
    assert without_timestamps(shown.get_json()) == without_timestamps(npz_body)


def without_timestamps(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if not k.endswith("_at")}


def test_timestamps_keep_their_utc_offset(client) -> None:
    created = post_file(client, npz_bytes(), "points.npz").get_json()
    shown = client.get(f"{DATASETS}/{created['id']}").get_json()
    assert shown["created_at"] == created["created_at"]
    study = submit(client)
    assert study["created_at"].endswith("+00:00")


def test_a_study_on_an_uploaded_data_set(client, recorder) -> None:
    uploaded = post_file(client, npz_bytes(), "points.npz").get_json()
    body = submit(client, dataset=uploaded["key"])
    assert body["dataset_id"] == uploaded["id"]
    assert body["spec"]["dataset"] == uploaded["key"]
    by_id = submit(client, dataset=uploaded["id"])
    assert by_id["dataset_id"] == uploaded["id"]
    assert recorder.calls == [("cpu", 1), ("cpu", 1)]


# --- service endpoints ----------------------------------------------------------------------------


def test_healthz(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "sqlite"}


def documented_paths(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) for every ``/api/v1`` rule of the app."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            out |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return out


SELF_DESCRIBING = {"/api/v1/openapi.json", "/api/v1/docs"}


def test_openapi_document_describes_every_resource_route(app, client) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    routes = {(p, m) for p, m in documented_paths(app) if p not in SELF_DESCRIBING}
    assert len(routes) >= 12
    described = {(p, m) for p, methods in document["paths"].items() for m in methods}
    assert routes <= described
    for path, method in routes:
        operation = document["paths"][path][method]
        assert operation["summary"] and operation["responses"]
        names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert names == set(re.findall(r"{(\w+)}", path))
    create = document["paths"][STUDIES]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Study"}


def test_openapi_document_lists_itself_and_the_docs_page(app, client) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    assert {"/api/v1/openapi.json", "/api/v1/docs"} <= set(document["paths"])
    assert documented_paths(app) <= {(p, m) for p, methods in document["paths"].items() for m in methods}


def test_openapi_document_is_valid(client) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(client.get("/api/v1/openapi.json").get_json())


def test_docs_page(client) -> None:
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert page.startswith("<!doctype html>")
    assert "/api/v1/studies/{study_id}/cancel" in page
    assert "openapi.json" in page


IMPORT_CHECK = """
import json, sys
from tuner_service.api import create_app
from tuner_service.config import load_settings
from tuner_service.store import Store

settings = load_settings({"TUNER_HOME": sys.argv[1]})
store = Store(settings.database_url)
store.upgrade()
store.create_team("t")
store.create_user("u", "t", "member")
token, _ = store.create_token("u")
client = create_app(settings, store=store, enqueue=lambda pool, count: None).test_client()
client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + token.secret
assert client.post("/api/v1/studies", json=json.loads(sys.argv[2])).status_code == 201
assert client.get("/api/v1/openapi.json").status_code == 200
heavy = ("tensorflow", "keras", "keras_tuner", "optuna")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def test_the_api_never_imports_tensorflow_keras_keras_tuner_or_optuna(tmp_path) -> None:
    study = digits_study(algorithm={"name": "tpe", "initial_points": 2})  # a TPE study is validated and stored
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK, str(tmp_path / "home"), json.dumps(study)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_progress_estimates_the_time_left_from_measured_trials(client, store) -> None:
    import uuid

    from tuner_service.search import TrialOutcome, claim_next, finish_trial

    pytest.importorskip("keras_tuner")
    body = client.post(STUDIES, json=digits_study(max_trials=4, parallelism=2)).get_json()
    assert body["progress"]["eta_s"] is None  # nothing measured yet
    claimed = claim_next(store, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
    finish_trial(store, body["id"], claimed.trial.id, TrialOutcome("completed", {"val_accuracy": 0.5}, 0))
    progress = client.get(f"{STUDIES}/{body['id']}").get_json()["progress"]
    duration = store.get_trial(body["id"], claimed.trial.id).duration_s
    assert progress["done"] == 1 and progress["eta_s"] == pytest.approx(round(duration * 3 / 2, 1), abs=0.11)
