"""The CLI's daily commands against a real API (`LocalService` without workers: the API on a free port):
tables fit 80 columns with rounded numbers, `--wide` and `--json` give full values, the number a table shows is
the one `download` takes, and errors (no server, malformed JSON) are messages, not tracebacks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import digits_study, free_port
from tuner_service.cli import main
from tuner_service.cli_tables import duration, sig
from tuner_service.client import Client
from tuner_service.launcher import LocalService, settings_env
from tuner_service.search import TrialOutcome, claim_next, finish_trial

LONG_VALUES = {"learning_rate": 0.0031443911752710788, "momentum": 0.9294371154524468}


@pytest.fixture
def service(settings) -> Iterator[LocalService]:
    with LocalService(settings, port=free_port(), workers=0, reap_every_s=3600, access_log=False) as running:
        yield running


def cli(settings, *args: str, url: str | None = None):
    env = {**settings_env(settings), "TUNER_URL": url}  # None: unset, so the CLI finds the address itself
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def finished_study(service: LocalService, store, settings, trials: int = 3) -> int:
    """A study whose trials finished the way workers finish them, with long hyperparameter values."""
    client = Client(service.url, token=service.admin_token)
    study = client.submit_study(digits_study(max_trials=trials))["id"]
    for index in range(trials):
        claimed = claim_next(store, "cpu", ticket=uuid.uuid4().hex, worker="cpu0", heartbeat_timeout_s=60)
        model = settings.artifacts / "models" / f"{study}-{index}.keras"
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(f"PK {index}".encode())
        outcome = TrialOutcome(
            "completed",
            {"val_accuracy": 0.912345678 + index / 100},
            best_epoch=2,
            model_path=str(model.relative_to(settings.artifacts)),
        )
        finish_trial(store, study, claimed.trial.id, outcome)
    return study


def test_numbers_are_rounded_to_significant_digits() -> None:
    assert sig(1.700046975206717) == "1.7"
    assert sig(0.0031443911752710788) == "0.00314"
    assert sig(0.912345678, 4) == "0.9123"
    assert sig(None) == "" and sig(64) == "64" and sig("adam") == "adam"
    assert duration(3.25) == "3.2s" and duration(185) == "3m05s" and duration(7300) == "2h01m"


def test_tables_fit_80_columns_and_wide_or_json_give_full_values(service, store, settings) -> None:
    (settings.home / "api-url").write_text(service.url + "\n")  # as `up` records it
    finished_study(service, store, settings)  # study 1: its trial ids are 1..3
    study = finished_study(service, store, settings)  # study 2: trial ids 4..6, numbers 0..2
    for args in (["leaderboard", str(study)], ["trials", str(study)], ["studies"], ["leaderboard"], ["queue"]):
        result = cli(settings, *args)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines and max(len(line) for line in lines) <= 80, result.output
        assert "0.9294371154524468" not in result.output
    board = cli(settings, "leaderboard", str(study)).output
    assert "0.9323" in board and "trial" in board  # the best score, to 4 significant digits
    wide = cli(settings, "leaderboard", str(study), "--wide").output
    assert "0.932345678" in wide and "val_accuracy" in wide
    items = json.loads(cli(settings, "leaderboard", str(study), "--json").output)["items"]
    best = items[0]
    assert best["number"] == 2 and best["trial_id"] == 6 and best["best_epoch"] == 3  # epochs from 1
    trials = json.loads(cli(settings, "trials", str(study), "--json").output)["items"]
    assert [t["number"] for t in trials] == [0, 1, 2]
    shown = json.loads(cli(settings, "show", str(study), "--json").output)
    assert shown["best_trial_number"] == 2 and shown["progress"]["done"] == 3
    text = cli(settings, "show", str(study)).output
    assert "3 of 3 trials" in text and "best val_accuracy: 0.9323 (trial 2)" in text
    assert cli(settings, "studies", "-q").output.split() == [str(study), "1"]


def test_download_takes_the_number_the_tables_show(service, store, settings, tmp_path: Path) -> None:
    (settings.home / "api-url").write_text(service.url + "\n")
    finished_study(service, store, settings, trials=1)
    study = finished_study(service, store, settings, trials=2)
    target = tmp_path / "trial.keras"
    assert cli(settings, "download", str(study), "1", "-o", str(target)).exit_code == 0
    assert target.read_bytes() == b"PK 1"
    best = tmp_path / "best.keras"
    assert cli(settings, "download", str(study), "-o", str(best)).exit_code == 0
    assert best.read_bytes() == b"PK 1"
    missing = cli(settings, "download", str(study), "7", "-o", str(tmp_path / "none.keras"))
    assert missing.exit_code == 2 and "404" in missing.output and "Traceback" not in missing.output


def test_the_queue_says_why_a_study_waits(service, settings) -> None:
    client = Client(service.url, token=service.admin_token)
    waiting = client.submit_study(digits_study(max_trials=2))["id"]
    paused = client.submit_study(digits_study(max_trials=2))["id"]
    client.pause(paused)
    assert client.queue()["waiting"][0]["waiting_because"] == "ready: next free worker"
    out = cli(settings, "queue", url=service.url).output
    row = next(line for line in out.splitlines() if line.split()[1:2] == [str(waiting)])
    assert "ready: next free worker" in row
    assert " 0.0" not in out
    assert "paused" in next(line for line in out.splitlines() if line.split()[1:2] == [str(paused)])


def test_controls_and_a_hyperband_budget_in_words(service, settings) -> None:
    client = Client(service.url, token=service.admin_token)
    doc = digits_study(algorithm={"name": "hyperband", "max_epochs": 9, "factor": 3})
    study = client.submit_study(doc)["id"]
    assert cli(settings, "pause", str(study), url=service.url).output.strip() == f"study {study} is paused"
    assert cli(settings, "resume", str(study), url=service.url).output.strip() == f"study {study} is queued"
    assert "priority high" in cli(settings, "priority", str(study), "high", url=service.url).output
    shown = cli(settings, "show", str(study), url=service.url).output
    assert "0 of 23 trials" in shown and "budget: 23 trials from hyperband brackets" in shown
    assert "max_trials does not apply" in shown
    assert cli(settings, "cancel", str(study), url=service.url).output.strip() == f"study {study} is cancelled"


def test_without_a_server_the_cli_says_how_to_start_or_point_at_one(settings) -> None:
    result = cli(settings, "studies", url=f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "tuner-service up" in result.output and "TUNER_URL" in result.output


def test_an_address_left_by_a_stopped_up_is_named_as_such(settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    stale = f"http://127.0.0.1:{free_port()}"
    (settings.home / "api-url").write_text(stale + "\n")  # as an `up` killed without stopping leaves it
    result = cli(settings, "show", "1")
    assert result.exit_code == 2 and stale in result.output and "no longer running" in result.output
    assert "tuner-service up" in result.output


def test_the_cli_finds_the_address_up_recorded(settings) -> None:
    assert cli(settings, "url").output.strip() == "http://127.0.0.1:8750"
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "api-url").write_text("http://127.0.0.1:9123\n")
    assert cli(settings, "url").output.strip() == "http://127.0.0.1:9123"
    assert cli(settings, "url", url="http://example.invalid:1").output.strip() == "http://example.invalid:1"


def test_malformed_json_is_a_clean_error_for_lr_find_as_for_submit(settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"dataset": ')
    for command in ("lr-find", "submit"):
        result = CliRunner().invoke(main, [command, str(bad)], env=settings_env(settings))
        assert result.exit_code == 2, result.output
        assert "is not valid JSON" in result.output and "Traceback" not in result.output


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("tuner-service, version ")
