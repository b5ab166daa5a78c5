"""Keep the benchmarks working: run each of them smoke-sized (`python -m bench --quick --only NAME`).

One test per benchmark, so they spread over pytest-xdist's workers and each stays far below pytest's timeout;
each writes into its own temporary folder, never into bench/results. Nothing here looks at a number; the full
run (`python -m bench`) produces BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
# Below pytest's own 600 s, so a stuck benchmark fails here with its output rather than as a bare timeout (each
# takes well under two minutes on 2 idle cores; a machine loaded several times over needs the margin).
SMOKE_TIMEOUT_S = 540


@pytest.mark.parametrize("name", [module.NAME for module in BENCHMARKS])
def test_the_benchmark_runs_smoke_sized(name: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "bench", "--quick", "--only", name, "--results", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    stored = json.loads((tmp_path / f"{name}.json").read_text())
    assert stored["quick"] is True and "error" not in stored and stored["result"]
    report = (tmp_path / "BENCHMARKS.md").read_text()
    section = report.split(f"(`{name}`)", 1)[1].split("\n## ", 1)[0]
    assert "Not run yet" not in section and "**Failed:**" not in section
