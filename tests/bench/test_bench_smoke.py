"""Keep the benchmarks working: run every one of them smoke-sized (`python -m bench --quick`).

Nothing here looks at a number; the full run (`python -m bench`) produces BENCHMARKS.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_every_benchmark_runs_smoke_sized() -> None:
    from bench.__main__ import BENCHMARKS

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = (REPO / "bench" / "results" / "quick" / "BENCHMARKS.md").read_text()
    for module in BENCHMARKS:
        assert f"(`{module.NAME}`)" in report, f"{module.NAME} is missing from the quick report"
