"""Every /api/v1 endpoint against every kind of caller: no token, a revoked or expired token, another
team's member, a viewer, a member and an admin. A route added without a row here fails the coverage test."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests.conftest import digits_study
from tuner_service.api import create_app
from tuner_service.catalog import upload_dataset
from tuner_service.search import TrialOutcome, claim_next, finish_trial
from tuner_service.study import submit_study

CALLERS = ("anonymous", "revoked", "expired", "other_team", "viewer", "member", "admin")


@dataclass
class World:
    tokens: dict[str, str]
    dataset_id: int
    study_id: int
    paused_study_id: int
    trial_number: int
    range_test_id: int
    rerun_id: int


def npz_bytes(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.normal(size=(40, 3)), y=rng.integers(0, 2, size=40))
    return buffer.getvalue()


@pytest.fixture
def world(store, settings) -> World:
    store.create_team("alpha")
    store.create_team("beta")
    store.create_team("ops")
    for name, team, role in [
        ("ana", "alpha", "member"), ("vic", "alpha", "viewer"), ("bob", "beta", "member"), ("root", "ops", "admin"),
        ("old", "alpha", "member"), ("late", "alpha", "member"),
    ]:  # fmt: skip
        store.create_user(name, team, role)
    tokens = {
        caller: store.create_token(user)[0].secret
        for caller, user in [("member", "ana"), ("viewer", "vic"), ("other_team", "bob"), ("admin", "root")]
    }
    revoked, _ = store.create_token("old")
    store.revoke_token(revoked.prefix)
    tokens["revoked"] = revoked.secret
    expired, _ = store.create_token("late", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    tokens["expired"] = expired.secret
    alpha = store.get_team("alpha").id
    ana = store.authenticate(tokens["member"])
    dataset = upload_dataset(store, settings, npz_bytes(), "alpha.npz", target_column=None, team_id=alpha)
    study = submit_study(store, settings, digits_study(), lambda pool, n: None, team_id=alpha, owner_id=ana.user_id)
    paused = submit_study(store, settings, digits_study(), lambda pool, n: None, team_id=alpha, owner_id=ana.user_id)
    store.control_study(paused.id, action="pause")
    claimed = claim_next(store, "cpu", ticket=uuid.uuid4().hex, worker="w", heartbeat_timeout_s=60)
    model = settings.artifacts / "studies" / str(study.id) / "models" / "trial-0.keras"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"PK model bytes")
    outcome = TrialOutcome(
        "completed", {"val_accuracy": 0.9, "loss": 0.1}, 0, model_path=str(model.relative_to(settings.artifacts))
    )
    finish_trial(store, study.id, claimed.trial.id, outcome)
    range_test = store.create_job("lr_range_test", {}, team_id=alpha, dataset_id=dataset.id)
    rerun = store.create_job("rerun", {"repeats": 1}, team_id=alpha, study_id=study.id, trial_id=claimed.trial.id)
    return World(tokens, dataset.id, study.id, paused.id, claimed.trial.number, range_test.id, rerun.id)


# endpoint -> (method, path template, kind, request kwargs). Kinds: "list" (a team sees its own rows),
# "object" (another team's answers 404), "create" (writes into the caller's own team), "write" (changes an
# object: viewers 403, another team 404), "docs" (any authenticated caller).
ENDPOINTS = {
    "datasets.index": ("GET", "/api/v1/datasets", "list", {}),
    "datasets.upload": ("POST", "/api/v1/datasets", "create", {"upload": True}),
    "datasets.show": ("GET", "/api/v1/datasets/{dataset_id}", "object", {}),
    "studies.index": ("GET", "/api/v1/studies", "list", {}),
    "studies.create": ("POST", "/api/v1/studies", "create", {"json": digits_study()}),
    "studies.show": ("GET", "/api/v1/studies/{study_id}", "object", {}),
    "studies.patch": ("PATCH", "/api/v1/studies/{study_id}", "write", {"json": {"priority": "high"}}),
    "studies.cancel": ("POST", "/api/v1/studies/{study_id}/cancel", "write", {}),
    "studies.pause": ("POST", "/api/v1/studies/{study_id}/pause", "write", {}),
    "studies.resume": ("POST", "/api/v1/studies/{paused_study_id}/resume", "write", {}),
    "studies.trials": ("GET", "/api/v1/studies/{study_id}/trials", "object", {}),
    "studies.trial": ("GET", "/api/v1/studies/{study_id}/trials/{trial_number}", "object", {}),
    "studies.trial_model": ("GET", "/api/v1/studies/{study_id}/trials/{trial_number}/model", "object", {}),
    "studies.leaderboard": ("GET", "/api/v1/studies/{study_id}/leaderboard", "object", {}),
    "studies.best_model": ("GET", "/api/v1/studies/{study_id}/best-model", "object", {}),
    "leaderboard.index": ("GET", "/api/v1/leaderboard", "list", {}),
    "queue.index": ("GET", "/api/v1/queue", "list", {}),
    "hypermodels.index": ("GET", "/api/v1/hypermodels", "docs", {}),
    "jobs.create_range_test": (
        "POST",
        "/api/v1/lr-range-tests",
        "create-job",
        {"json": {"dataset": "digits", "task": "multiclass"}},
    ),
    "jobs.list_range_tests": ("GET", "/api/v1/lr-range-tests", "list", {}),
    "jobs.show_range_test": ("GET", "/api/v1/lr-range-tests/{range_test_id}", "object", {}),
    "jobs.create_rerun": ("POST", "/api/v1/studies/{study_id}/trials/{trial_number}/rerun", "write-job", {"json": {}}),
    "jobs.show_rerun": ("GET", "/api/v1/studies/{study_id}/trials/{trial_number}/reruns/{rerun_id}", "object", {}),
    "openapi.openapi_json": ("GET", "/api/v1/openapi.json", "docs", {}),
    "openapi.docs": ("GET", "/api/v1/docs", "docs", {}),
}


def expected_status(kind: str, caller: str, method: str) -> int:
    if caller in ("anonymous", "revoked", "expired"):
        return 401
    if kind in ("object", "write", "write-job") and caller == "other_team":
        return 404
    if kind in ("create", "write", "create-job", "write-job") and caller == "viewer":
        return 403
    return {"create": 201, "create-job": 202, "write-job": 202}.get(kind, 200)


def test_every_api_route_is_in_the_matrix(settings, store) -> None:
    app = create_app(settings, store=store, enqueue=lambda pool, n: None)
    routes = {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1")}
    assert routes == set(ENDPOINTS)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_authorization_matrix(endpoint: str, caller: str, world: World, settings, store) -> None:
    method, template, kind, options = ENDPOINTS[endpoint]
    app = create_app(settings, store=store, enqueue=lambda pool, n: None, enqueue_job=lambda pool, job: None)
    client = app.test_client()
    headers = {} if caller == "anonymous" else {"Authorization": f"Bearer {world.tokens[caller]}"}
    path = template.format(**vars(world))
    kwargs = dict(options)
    if kwargs.pop("upload", False):
        kwargs["data"] = {"file": (io.BytesIO(npz_bytes(seed=7)), "new.npz")}
        kwargs["content_type"] = "multipart/form-data"
    response = client.open(path, method=method, headers=headers, **kwargs)
    expected = expected_status(kind, caller, method)
    assert response.status_code == expected, response.get_data(as_text=True)[:500]
    if expected >= 400:
        assert response.mimetype == "application/problem+json"
        if expected == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if kind == "list" and caller == "other_team":
        assert str(world.study_id) not in _ids(response.get_json()), "another team's study leaked into a list"
    if kind == "list" and caller in ("member", "admin", "viewer") and endpoint != "queue.index":
        assert response.get_json()["total"] >= 1


def _ids(body: dict) -> set[str]:
    items = body.get("items") or body.get("waiting") or []
    return {str(item.get("study_id", item.get("id"))) for item in items}


def test_another_teams_data_set_cannot_be_named_in_a_study(world: World, settings, store) -> None:
    client = create_app(settings, store=store, enqueue=lambda pool, n: None).test_client()
    key = store.get_dataset(world.dataset_id).key
    response = client.post(
        "/api/v1/studies",
        json=digits_study(dataset=key, task={"type": "binary"}, objective="val_accuracy"),
        headers={"Authorization": f"Bearer {world.tokens['other_team']}"},
    )
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == "dataset"


def test_same_upload_by_two_teams_gives_each_its_own_data_set(world: World, settings, store) -> None:
    client = create_app(settings, store=store, enqueue=lambda pool, n: None).test_client()
    ids = []
    for caller in ("member", "other_team"):
        response = client.post(
            "/api/v1/datasets",
            data={"file": (io.BytesIO(npz_bytes(seed=3)), "same.npz")},
            content_type="multipart/form-data",
            headers={"Authorization": f"Bearer {world.tokens[caller]}"},
        )
        assert response.status_code == 201
        ids.append(response.get_json()["id"])
    assert ids[0] != ids[1]
