"""`tuner-service admin`: teams, users and tokens made from the command line work against the API."""

from __future__ import annotations

import os

from click.testing import CliRunner

from tuner_service.cli import main


def run(settings, *args: str):
    env = {"TUNER_HOME": str(settings.home), "TUNER_DATABASE_URL": settings.database_url}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_create_team_user_token_then_revoke(settings, store) -> None:
    assert run(settings, "admin", "create-team", "vision", "--weight", "2", "--max-concurrent", "3").exit_code == 0
    assert run(settings, "admin", "create-user", "ada", "--team", "vision", "--role", "viewer").exit_code == 0
    made = run(settings, "admin", "create-token", "ada", "--expires-in-days", "1")
    assert made.exit_code == 0
    secret = made.stdout.strip().splitlines()[0]
    caller = store.authenticate(secret)
    assert caller is not None and caller.role == "viewer" and caller.team_name == "vision"
    assert store.get_team("vision").share_weight == 2.0 and store.get_team("vision").max_concurrent_trials == 3
    assert run(settings, "admin", "set-quota", "vision", "--gpu-hours", "8").exit_code == 0
    assert store.get_team("vision").gpu_hours_per_day == 8.0
    assert run(settings, "admin", "set-quota", "vision", "--max-model-params", "1000000").exit_code == 0
    assert store.get_team("vision").max_model_params == 1_000_000
    assert run(settings, "admin", "set-quota", "vision", "--max-model-params", "0").exit_code != 0
    assert run(settings, "admin", "revoke-token", secret[:12]).exit_code == 0
    assert store.authenticate(secret) is None
    again = run(settings, "admin", "revoke-token", secret[:12])
    assert again.exit_code != 0 and "no active token" in again.output


def test_errors_are_reported_not_raised(settings, store) -> None:
    run(settings, "admin", "create-team", "vision")
    duplicate = run(settings, "admin", "create-team", "vision")
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output
    unknown = run(settings, "admin", "create-user", "x", "--team", "nope")
    assert unknown.exit_code != 0 and "does not exist" in unknown.output


def test_the_local_admin_token_is_private(settings, store) -> None:
    from tuner_service.launcher import ensure_admin_token

    secret = ensure_admin_token(store, settings)
    path = settings.home / "admin-token"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert store.authenticate(secret).is_admin
    assert ensure_admin_token(store, settings) == secret  # a second start keeps it
