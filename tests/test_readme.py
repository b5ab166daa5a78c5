"""The README works when pasted: its shell blocks run in order, in one shell, in a fresh directory (so `up`
makes a fresh `./.tuner`), against a fresh `tuner-service up` on a free port; every output it shows is checked.

Blocks are marked for this test by an HTML comment just above them (invisible on the rendered page):
``skip`` (not run: the tests, Docker), ``background`` (the server, started in the background),
``expect-error`` (a request that must fail; its output is the next block), ``output`` (what the previous
block prints: JSON keys and values that must be in it) and ``file PATH`` (a file of the checkout, shown whole).
Only the studies a command waits for are made smaller (the README's own files take minutes); each such
substitution must apply, so the README cannot drift from it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The studies that the README waits for, made smaller here (the README's commands themselves are unchanged).
SUBSTITUTIONS = {
    "python3 -m venv .venv && .venv/bin/pip install -e '.[all]' -e examples/hypermodels && ": "",
    "run examples/digits.json": "run examples/digits-quick.json",
    "submit examples/digits.json --wait": "submit examples/digits-quick.json --wait",
}
BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<mark>[\w-]+)(?P<note>[^>]*)-->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S
)


@dataclass
class Block:
    lang: str
    mark: str | None
    body: str
    note: str = ""


def readme_blocks() -> list[Block]:
    return [
        Block(m["lang"], m["mark"], m["body"], (m["note"] or "").strip()) for m in BLOCK.finditer(README.read_text())
    ]


def test_the_files_the_readme_shows_are_the_ones_shipped() -> None:
    shown = [b for b in readme_blocks() if b.mark == "file"]
    assert shown, "the README lost its file markers"
    for block in shown:
        assert json.loads(block.body) == json.loads((ROOT / block.note).read_text()), block.note


def script_of(blocks: list[Block], out_dir: Path) -> tuple[str, dict[int, Path], set[str]]:
    """One bash script for the blocks in order; returns it, where each checked block's output goes, and the
    substitutions applied."""
    lines = [
        "set -euo pipefail",
        # Every request must succeed, except in a block marked as an expected error.
        'curl() { command curl --fail-with-body "$@"; }',
    ]
    outputs: dict[int, Path] = {}
    applied: set[str] = set()
    for index, block in enumerate(blocks):
        if block.lang != "sh" or block.mark == "skip":
            continue
        body = block.body
        for old, new in SUBSTITUTIONS.items():
            if old in body:
                applied.add(old)
                body = body.replace(old, new)
        lines.append(f"echo '== README block {index}' >&2")
        if block.mark == "background":
            lines += [
                f"(\nexec {body.strip()}\n) > up.log 2>&1 &",
                "UP_PID=$!",
                "trap 'kill $UP_PID 2>/dev/null; wait $UP_PID 2>/dev/null || true' EXIT",
                # `up` records its address once it listens; wait for it to answer (at most a minute).
                "for _ in $(seq 120); do",
                '  [ -s .tuner/api-url ] && command curl -sf "$(cat .tuner/api-url)/healthz" >/dev/null && break',
                "  sleep 0.5",
                "done",
                'command curl -sf "$(cat .tuner/api-url)/healthz" >/dev/null || { cat up.log >&2; exit 1; }',
            ]
            continue
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if following is not None and following.mark == "output":
            outputs[index + 1] = out_dir / f"block-{index}.out"
            call = "command curl" if block.mark == "expect-error" else "curl"
            lines += [f'curl() {{ {call} "$@"; }}', f"{{\n{body}\n}} | tee {outputs[index + 1]}"]
            lines.append('curl() { command curl --fail-with-body "$@"; }')
        else:
            lines.append(body)
    return "\n".join(lines) + "\n", outputs, applied


def contains(expected: object, actual: object) -> bool:
    """Whether ``actual`` has every key and value of ``expected`` (lists compared item by item)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and contains(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(contains(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return expected == actual


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh directory that looks like a checkout with its virtual environment: examples/ and .venv/bin."""
    work = tmp_path / "checkout"
    (work / ".venv" / "bin").mkdir(parents=True)
    (work / "examples").symlink_to(ROOT / "examples")
    tool = work / ".venv" / "bin" / "tuner-service"
    tool.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tuner_service.cli "$@"\n')
    tool.chmod(0o755)
    (work / ".venv" / "bin" / "python").symlink_to(sys.executable)
    return work


def test_the_readme_blocks_work_when_pasted_in_order(workdir: Path, tmp_path: Path) -> None:
    blocks = readme_blocks()
    script, outputs, applied = script_of(blocks, tmp_path)
    assert applied == set(SUBSTITUTIONS), f"README no longer has: {set(SUBSTITUTIONS) - applied}"
    assert any(b.mark == "background" for b in blocks) and outputs, "the README lost its markers"
    (tmp_path / "readme.sh").write_text(script)
    # The README's defaults, not the test session's: no TUNER_* settings but the port `up` listens on.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNER_")}
    env.update(
        TUNER_PORT=str(free_port()),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        TF_CPP_MIN_LOG_LEVEL="2",
        COLUMNS="80",
    )
    proc = subprocess.Popen(
        ["bash", str(tmp_path / "readme.sh")],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=480)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    up_log = workdir / "up.log"
    detail = log[-6000:] + ("\n--- up.log\n" + up_log.read_text()[-3000:] if up_log.exists() else "")
    assert proc.returncode == 0, detail
    for index, path in outputs.items():
        shown = blocks[index]
        assert shown.lang == "json", "only JSON outputs are checked"
        expected, actual = json.loads(shown.body), json.loads(path.read_text())
        assert contains(expected, actual), f"README shows {expected}\nthe command printed {actual}"
    # The first command ends with the leaderboard (this also stands for a separate test of `run`).
    assert "study 1: digits-quick: 2 completed trials, best first" in log and "\nstudy 1 completed" in log
    # What the pasted commands leave behind, where the README says.
    assert (workdir / "best.keras").read_bytes()[:2] == b"PK"
    assert (workdir / "lr.png").stat().st_size > 0
    assert list(workdir.glob("study-*-best.keras")) and list(workdir.glob("study-*-trial-0.keras"))
    assert not (workdir / ".tuner" / "api-url").exists(), "up forgets its address when it stops"
    for noise in ("oneDNN", "absl::InitializeLog", "superuser privileges"):
        assert noise not in log, f"worker noise belongs in .tuner/logs/: {noise}"
    assert "GET /api/v1" not in (up_log.read_text() if up_log.exists() else ""), "no access log by default"
