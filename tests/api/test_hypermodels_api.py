"""GET /api/v1/hypermodels and studies naming a hypermodel, against announcements in the store (the API
process never builds a model: the workers recorded these spaces)."""

from __future__ import annotations

from tuner_service.store.models import WorkerHypermodelRow, utcnow

CNN_SPACE = {
    "filters_0": {"type": "int", "min": 8, "max": 32, "step": 8, "default": 16},
    "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log", "default": 0.003},
    "batch_size": {"type": "choice", "values": [32, 64]},
}


def announce(store, worker: str = "w0", **changes) -> None:
    offer = {
        "name": "cnn",
        "package": "pkg",
        "version": "1.0",
        "target": "pkg.cnn:CNN",
        "search_space": CNN_SPACE,
        "input_kinds": ["images"],
    }
    offer.update(changes)
    store.announce_hypermodels(worker, "cpu", [offer])


def study(**changes) -> dict:
    doc = {
        "name": "cnn",
        "dataset": "builtin:digits_images",
        "task": "multiclass",
        "model": {"hypermodel": "cnn"},
        "search_space": {"filters_0": {"type": "choice", "values": [8, 16]}},
        "max_trials": 2,
    }
    doc.update(changes)
    return doc


def test_the_registry_lists_what_workers_announced_with_liveness(client, store) -> None:
    announce(store)
    items = client.get("/api/v1/hypermodels").json["items"]
    assert [(i["name"], i["pool"], i["live"], i["input_kinds"]) for i in items] == [("cnn", "cpu", True, ["images"])]
    assert items[0]["search_space"] == CNN_SPACE and items[0]["workers"][0]["worker"] == "w0"
    store.worker_seen("w0", stopped=True)
    assert client.get("/api/v1/hypermodels").json["items"][0]["live"] is False
    assert client.get("/api/v1/hypermodels?pool=gpu").json["items"] == []


def test_a_study_names_a_hypermodel_and_stores_the_resolved_space(client, store, recorder) -> None:
    announce(store)
    response = client.post("/api/v1/studies", json=study())
    assert response.status_code == 201, response.json
    spec = response.json["spec"]
    assert spec["model"] == {
        "hypermodel": "cnn",
        "tune_new_entries": True,
        "target": "pkg.cnn:CNN",
        "package": "pkg",
        "version": "1.0",
    }
    assert spec["search_space"]["filters_0"] == {"type": "choice", "values": [8, 16]}
    assert spec["search_space"]["batch_size"] == CNN_SPACE["batch_size"]


def test_registry_problems_are_422_naming_the_field(client, store) -> None:
    announce(store)
    announce(store, worker="w1", name="tabular", input_kinds=["vectors"])
    cases = [
        (study(model={"hypermodel": "resnet"}), "model.hypermodel"),
        (study(search_space={"units": {"type": "int", "min": 1, "max": 4}}), "search_space.units"),
        (study(dataset="builtin:digits"), "dataset"),  # vectors for an images-only hypermodel
        (study(model={"hypermodel": "tabular"}, search_space=None), "dataset"),  # images for a vectors-only one
    ]
    for doc, field in cases:
        if doc.get("search_space") is None:
            doc.pop("search_space")
        response = client.post("/api/v1/studies", json=doc)
        assert response.status_code == 422, (field, response.json)
        assert response.content_type.startswith("application/problem+json")
        assert field in [e["field"] for e in response.json["errors"]], (field, response.json)


def test_a_hypermodel_of_another_pool_is_unknown_in_this_one(client, store) -> None:
    store.announce_hypermodels("g0", "gpu", [{"name": "cnn", "target": "p:C", "search_space": CNN_SPACE}])
    response = client.post("/api/v1/studies", json=study())
    assert response.status_code == 422 and response.json["errors"][0]["field"] == "model.hypermodel"


def test_a_study_whose_workers_are_gone_waits_with_the_reason_in_the_queue(client, store) -> None:
    announce(store)
    store.worker_seen("w0", stopped=True)
    response = client.post("/api/v1/studies", json=study())
    assert response.status_code == 201, response.json
    waiting = client.get("/api/v1/queue").json["waiting"]
    assert "hypermodel 'cnn'" in waiting[0]["blocked_reason"]
    announce(store)  # the worker is back
    assert client.get("/api/v1/queue").json["waiting"][0]["blocked_reason"] is None


def test_an_announcement_replaces_the_workers_previous_one(store) -> None:
    announce(store)
    announce(store, name="cnn2")
    rows = store.hypermodel_offers(live_within_s=60)
    assert [r.name for r in rows] == ["cnn2"]
    assert WorkerHypermodelRow.__tablename__ == "worker_hypermodels" and utcnow() >= rows[0].last_seen_at


def test_a_worker_claims_only_studies_of_hypermodels_it_offers(client, store) -> None:
    from tuner_service.search import Claim, Done, claim_next

    announce(store)
    assert client.post("/api/v1/studies", json=study()).status_code == 201
    plain, cnn = frozenset({"mlp"}), frozenset({"cnn"})
    without = claim_next(store, "cpu", ticket="t1", worker="plain", heartbeat_timeout_s=60, hypermodels=plain)
    assert isinstance(without, Done)
    claimed = claim_next(store, "cpu", ticket="t2", worker="w0", heartbeat_timeout_s=60, hypermodels=cnn)
    assert isinstance(claimed, Claim) and claimed.trial.hyperparameters["filters_0"] in (8, 16)


REGISTRY_IMPORT_CHECK = """
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
store.announce_hypermodels("w0", "cpu", [json.loads(sys.argv[2])])
client = create_app(settings, store=store, enqueue=lambda pool, count: None).test_client()
client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + token.secret
assert client.get("/api/v1/hypermodels").status_code == 200
study = json.loads(sys.argv[3])
assert client.post("/api/v1/studies", json=study).status_code == 201
study["search_space"] = {"nope": {"type": "int", "min": 1, "max": 2}}
assert client.post("/api/v1/studies", json=study).status_code == 422
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "keras_tuner"))))
"""


def test_the_api_validates_against_the_registry_without_tensorflow(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    offer = {"name": "cnn", "target": "pkg.cnn:CNN", "search_space": CNN_SPACE, "input_kinds": ["images"]}
    result = subprocess.run(
        [sys.executable, "-c", REGISTRY_IMPORT_CHECK, str(tmp_path / "home"), json.dumps(offer), json.dumps(study())],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_workers_gone_for_a_week_are_forgotten_at_the_next_announcement(store) -> None:
    from datetime import timedelta

    from sqlalchemy import update
    from sqlalchemy.orm import Session

    announce(store, worker="host:123")
    with Session(store.engine) as session, session.begin():
        session.execute(update(WorkerHypermodelRow).values(last_seen_at=utcnow() - timedelta(days=8)))
    announce(store, worker="host:456")
    assert [o.worker for o in store.hypermodel_offers(live_within_s=60)] == ["host:456"]
