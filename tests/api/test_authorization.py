"""Every /api/v1 endpoint against every kind of caller: no token, a revoked or expired token, another
team's member, a viewer, a member and an admin. A route added without a row here fails the coverage test."""

from __future__ import annotations

import io
import os
import re
import stat
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

CALLERS = ("anonymous", "revoked", "expired", "other_team", "viewer", "member", "team_admin", "admin")


@dataclass
class World:
    tokens: dict[str, str]
    dataset_id: int
    study_id: int
    paused_study_id: int
    trial_number: int
    range_test_id: int
    rerun_id: int

    @property
    def member_token_prefix(self) -> str:
        return self.tokens["member"][:12]


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
        ("old", "alpha", "member"), ("late", "alpha", "member"), ("tia", "alpha", "team_admin"),
    ]:  # fmt: skip
        store.create_user(name, team, role)
    tokens = {
        caller: store.create_token(user)[0].secret
        for caller, user in [
            ("member", "ana"), ("viewer", "vic"), ("other_team", "bob"), ("admin", "root"), ("team_admin", "tia")
        ]
    }  # fmt: skip
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
    "team.users": ("GET", "/api/v1/users", "manage", {}),
    "team.create_user": ("POST", "/api/v1/users", "manage-create", {"json": {"name": "newcomer", "role": "viewer"}}),
    "team.create_token": ("POST", "/api/v1/tokens", "manage-create", {"json": {"user": "ana", "label": "ci"}}),
    "team.revoke_token": ("DELETE", "/api/v1/tokens/{member_token_prefix}", "manage-delete", {}),
    "openapi.openapi_json": ("GET", "/api/v1/openapi.json", "docs", {}),
    "openapi.docs": ("GET", "/api/v1/docs", "docs", {}),
}


def expected_status(kind: str, caller: str, method: str) -> int:
    if caller in ("anonymous", "revoked", "expired"):
        return 401
    if kind.startswith("manage"):  # a team's users and tokens: its team admin and the deployment's admin only
        if caller not in ("team_admin", "admin"):
            return 403
        return {"manage-create": 201, "manage-delete": 204}.get(kind, 200)
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
    path = template.format(**vars(world), member_token_prefix=world.member_token_prefix)
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
    if kind == "list" and caller in ("member", "team_admin", "admin", "viewer") and endpoint != "queue.index":
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


# -- sessions, redirects, team admins and throttling -----------------------------------------------------


def sign_in(client, token: str, target: str = "/"):
    page = client.get("/signin").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf, page
    return client.post("/signin", data={"token": token, "next": target, "csrf_token": csrf.group(1)})


@pytest.mark.parametrize(
    "target",
    ["/studies\r\nSet-Cookie: x=1", "/%09/evil.example/", "/\t/evil.example/", "//evil.example/", "/\\evil.example",
     "https://evil.example/", "/%2F/evil.example/", "javascript:alert(1)"],
)  # fmt: skip
def test_sign_in_never_redirects_off_site(world: World, settings, store, target: str) -> None:
    """After signing in the browser goes to ``next`` only when it is a plain path on this site."""
    app = create_app(settings, store=store, enqueue=lambda pool, n: None)
    response = sign_in(app.test_client(), world.tokens["member"], target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_sign_in_keeps_a_local_next(world: World, settings, store) -> None:
    app = create_app(settings, store=store, enqueue=lambda pool, n: None)
    response = sign_in(app.test_client(), world.tokens["member"], "/studies/3?tab=trials")
    assert response.headers["Location"] == "/studies/3?tab=trials"


def test_sign_out_ends_the_session_for_every_copy_of_its_cookie(world: World, settings, store) -> None:
    app = create_app(settings, store=store, enqueue=lambda pool, n: None)
    browser, thief = app.test_client(), app.test_client()
    sign_in(browser, world.tokens["member"])
    cookie = browser.get_cookie("session")
    thief.set_cookie("session", cookie.value)
    assert thief.get("/api/v1/studies").status_code == 200  # the copy works while the session lives
    page = browser.get("/signout").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert browser.post("/signout", data={"csrf_token": csrf}).status_code == 302
    assert thief.get("/api/v1/studies").status_code == 401
    assert thief.get("/").headers["Location"].startswith("/signin")
    # the bearer token itself still works: signing out of the dashboard does not revoke it
    headers = {"Authorization": f"Bearer {world.tokens['member']}"}
    assert thief.get("/api/v1/studies", headers=headers).status_code == 200


def test_a_team_admin_manages_only_its_own_team(world: World, settings, store) -> None:
    client = create_app(settings, store=store, enqueue=lambda pool, n: None).test_client()
    headers = {"Authorization": f"Bearer {world.tokens['team_admin']}"}
    names = {u["name"] for u in client.get("/api/v1/users", headers=headers).get_json()["items"]}
    assert "ana" in names and "bob" not in names and "root" not in names
    made = client.post("/api/v1/tokens", json={"user": "ana"}, headers=headers)
    assert made.status_code == 201 and store.authenticate(made.get_json()["secret"]).user_name == "ana"
    other = client.post("/api/v1/tokens", json={"user": "bob"}, headers=headers)
    assert other.status_code == 422 and other.get_json()["errors"][0]["field"] == "user"
    assert client.delete(f"/api/v1/tokens/{world.tokens['other_team'][:12]}", headers=headers).status_code == 404
    assert store.authenticate(world.tokens["other_team"]) is not None
    promoted = client.post("/api/v1/users", json={"name": "eve", "role": "admin"}, headers=headers)
    assert promoted.status_code == 422 and promoted.get_json()["errors"][0]["field"] == "role"
    # it sees and steers its own team's studies, and no other team's
    assert client.get(f"/api/v1/studies/{world.study_id}", headers=headers).status_code == 200
    bob = {"Authorization": f"Bearer {world.tokens['other_team']}"}
    beta_study = client.post("/api/v1/studies", json=digits_study(), headers=bob).get_json()["id"]
    assert client.post(f"/api/v1/studies/{beta_study}/cancel", headers=headers).status_code == 404


def test_failed_tokens_are_throttled_per_address_and_logged(world: World, settings, store, caplog) -> None:
    app = create_app(settings.with_overrides(auth_failures_per_minute=3), store=store, enqueue=lambda pool, n: None)
    client = app.test_client()
    attacker = {"REMOTE_ADDR": "203.0.113.9"}
    with caplog.at_level("WARNING", logger="tuner_service.auth"):
        for guess in range(3):
            bad = {"Authorization": f"Bearer tks_guess{guess}"}
            assert client.get("/api/v1/studies", headers=bad, environ_base=attacker).status_code == 401
    assert sum("203.0.113.9" in r.getMessage() for r in caplog.records) == 3
    good = {"Authorization": f"Bearer {world.tokens['member']}"}
    blocked = client.get("/api/v1/studies", headers=good, environ_base=attacker)
    assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "60"
    assert blocked.mimetype == "application/problem+json"
    other_address = client.get("/api/v1/studies", headers=good, environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert other_address.status_code == 200


def test_the_failure_count_is_shared_through_redis(world: World, settings, store, redis_url, redis_prefix) -> None:
    """Two API replicas of a team deployment see one count per address."""
    team = settings.with_overrides(broker_url=redis_url, broker_key_prefix=redis_prefix, auth_failures_per_minute=2)
    first, second = (create_app(team, store=store, enqueue=lambda pool, n: None).test_client() for _ in range(2))
    attacker = {"REMOTE_ADDR": "203.0.113.10"}
    bad = {"Authorization": "Bearer tks_nope"}
    assert first.get("/api/v1/studies", headers=bad, environ_base=attacker).status_code == 401
    assert second.get("/api/v1/studies", headers=bad, environ_base=attacker).status_code == 401
    assert first.get("/api/v1/studies", headers=bad, environ_base=attacker).status_code == 429


def test_api_answers_carry_the_dashboards_security_headers(world: World, settings, store) -> None:
    client = create_app(settings, store=store, enqueue=lambda pool, n: None).test_client()
    headers = {"Authorization": f"Bearer {world.tokens['member']}"}
    pages = ("/signin", "/static/dashboard.css")  # the dashboard's answers get the same headers
    for path in ("/api/v1/studies", "/api/v1/docs", "/api/v1/openapi.json", "/api/v1/studies/999999", *pages):
        response = client.get(path, headers=headers)
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "Strict-Transport-Security" not in response.headers


def test_secure_cookies_and_hsts_when_served_over_https(world: World, settings, store) -> None:
    app = create_app(settings.with_overrides(secure_cookies=True), store=store, enqueue=lambda pool, n: None)
    client = app.test_client()
    response = sign_in(client, world.tokens["member"])
    assert "Secure" in response.headers["Set-Cookie"] and "HttpOnly" in response.headers["Set-Cookie"]
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    api = client.get("/api/v1/studies", headers={"Authorization": f"Bearer {world.tokens['member']}"})
    assert api.headers["Strict-Transport-Security"].startswith("max-age=")


def test_the_home_is_its_owners_alone(settings, store) -> None:
    os.chmod(settings.home, 0o755)
    create_app(settings, store=store, enqueue=lambda pool, n: None)
    assert stat.S_IMODE(settings.home.stat().st_mode) == 0o700
    files = [p for p in settings.home.iterdir() if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), files
