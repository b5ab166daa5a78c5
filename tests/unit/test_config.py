"""Settings that are made on first use must be made once, even by processes starting together."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from tuner_service.config import load_settings, session_secret


def _secret(home: str) -> str:
    return session_secret(load_settings({"TUNER_HOME": home}))


def test_processes_starting_together_share_one_session_secret(tmp_path: Path) -> None:
    for round_number in range(5):
        home = str(tmp_path / f"home{round_number}")
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            secrets = pool.map(_secret, [home] * 8)
        assert len(set(secrets)) == 1 and len(secrets[0]) == 64
        assert sorted(p.name for p in Path(home).iterdir()) == ["secret-key"]
