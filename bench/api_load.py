"""The API under concurrent load: gunicorn (2 workers × 4 threads) on PostgreSQL + Redis, a bounded client.

The database holds a few thousand finished trials of the client's team (``bench/synthetic.py``); no Celery
worker runs, so submitted studies stay queued (their messages wait in Redis db 13). The client is a fixed
number of threads with ``requests`` sessions (neither aiohttp nor httpx is installed and neither is worth a
dependency here), each with its own bearer token, sending requests back to back until the deadline. The
baseline is the same client against ``GET /healthz`` only, in the same run.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    REDIS_URL,
    REPO,
    fmt_s,
    fmt_x,
    free_port,
    md_table,
    percentile,
    ratio,
    redis_prefix,
    stop_process,
    temporary_postgres,
    wait_until,
)

NAME = "api_load"
TITLE = "API under concurrent load (gunicorn, PostgreSQL, Redis)"
MIX = (("leaderboard", 0.50), ("study", 0.35), ("submit", 0.15))
GUNICORN = ["-w", "2", "--threads", "4"]


def _client_library() -> str:
    import importlib.util

    for name in ("aiohttp", "httpx"):
        if importlib.util.find_spec(name) is not None:
            return name
    return "requests (threads)"


def submission(n: int) -> dict[str, Any]:
    return {
        "name": f"load-{n}",
        "dataset": "builtin:digits",
        "task": {"type": "multiclass"},
        "objective": {"name": "val_accuracy", "direction": "max"},
        "search_space": {
            "hidden_layers": {"type": "int", "min": 0, "max": 8},
            "neurons": {"type": "int", "min": 16, "max": 256, "sampling": "log"},
            "learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
            "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
            "batch_size": {"type": "choice", "values": [32, 64, 128]},
        },
        "algorithm": "random",
        "max_trials": 10,
        "seed": n,
        "early_stopping": {"patience": 3, "max_epochs": 30},
    }


class Load:
    """``clients`` threads sending requests back to back for ``seconds``; every response is recorded."""

    def __init__(self, base: str, tokens: list[str], study_ids: list[int], *, healthz_only: bool) -> None:
        self.base, self.tokens, self.study_ids, self.healthz_only = base, tokens, study_ids, healthz_only
        self.records: list[tuple[str, float, int]] = []  # kind, latency, status (0: no response)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._submitted = 0

    def _request(self, session: Any, rng: random.Random) -> tuple[str, str, str, dict[str, Any] | None]:
        if self.healthz_only:
            return "healthz", "GET", "/healthz", None
        kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        if kind == "leaderboard":
            if rng.random() < 0.5:
                return kind, "GET", "/api/v1/leaderboard?dataset=digits&metric=val_accuracy&limit=20", None
            return kind, "GET", f"/api/v1/studies/{rng.choice(self.study_ids)}/leaderboard?limit=20", None
        if kind == "study":
            return kind, "GET", f"/api/v1/studies/{rng.choice(self.study_ids)}", None
        with self._lock:
            self._submitted += 1
            n = self._submitted
        return kind, "POST", "/api/v1/studies", submission(n)

    def _client(self, index: int, deadline: float, warm_until: float) -> None:
        import requests

        rng = random.Random(index)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.tokens[index % len(self.tokens)]}"
        mine: list[tuple[str, float, int]] = []
        while time.monotonic() < deadline:
            kind, method, path, body = self._request(session, rng)
            start = time.perf_counter()
            status = 0
            try:
                response = session.request(method, self.base + path, json=body, timeout=30)
                status = response.status_code
                if status >= 300:
                    with self._lock:
                        self.errors.append(f"{method} {path}: {status} {response.text[:200]}")
            except Exception as exc:  # a refused or timed-out request is an error to count, not a crash
                with self._lock:
                    self.errors.append(f"{method} {path}: {type(exc).__name__}: {exc}"[:300])
            latency = time.perf_counter() - start
            if start >= warm_until:
                mine.append((kind, latency, status))
        session.close()
        with self._lock:
            self.records.extend(mine)

    def run(self, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
        begin = time.monotonic()
        warm_until_perf = time.perf_counter() + warmup
        deadline = begin + warmup + seconds
        cpu0 = os.times()
        threads = [
            threading.Thread(target=self._client, args=(i, deadline, warm_until_perf), daemon=True)
            for i in range(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=seconds + warmup + 60)
        cpu1 = os.times()
        measured = time.monotonic() - begin - warmup
        kinds: dict[str, Any] = {}
        for kind in sorted({k for k, _, _ in self.records}):
            lat = [lat for k, lat, _ in self.records if k == kind]
            bad = sum(1 for k, _, s in self.records if k == kind and not 200 <= s < 300)
            kinds[kind] = {
                "requests": len(lat),
                "p50_s": percentile(lat, 50),
                "p99_s": percentile(lat, 99),
                "errors": bad,
                "per_s": len(lat) / measured,
            }
        all_lat = [lat for _, lat, _ in self.records]
        return {
            "clients": clients,
            "seconds": measured,
            "requests": len(self.records),
            "throughput": len(self.records) / measured,
            "p50_s": percentile(all_lat, 50),
            "p99_s": percentile(all_lat, 99),
            "errors": sum(1 for _, _, s in self.records if not 200 <= s < 300),
            "error_samples": sorted(set(self.errors))[:5],
            "kinds": kinds,
            "client_cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        }


def _proc_cpu(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run(quick: bool) -> dict[str, Any]:
    import redis
    import requests

    from bench.synthetic import populate
    from tuner_service.store import Store

    clients, seconds, warmup = (5, 5.0, 1.0) if quick else (50, 60.0, 3.0)
    trials, studies = (500, 10) if quick else (5000, 50)
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    with (
        tempfile.TemporaryDirectory(prefix="bench-api-load-") as tmp,
        temporary_postgres() as url,
        redis_prefix() as prefix,
    ):
        store = Store(url)
        store.upgrade()
        data = populate(store, trials=trials, studies=studies, teams=["load"], batch=5000)
        tokens = []
        for i in range(clients):
            store.create_user(f"client-{i}", "load", "member")
            tokens.append(store.create_token(f"client-{i}")[0].secret)
        store.dispose()
        port = free_port()
        env = {
            **os.environ,
            "TUNER_HOME": str(Path(tmp) / "home"),
            "TUNER_DATABASE_URL": url,
            "TUNER_BROKER_URL": REDIS_URL,
            "TUNER_BROKER_KEY_PREFIX": prefix,
            "TUNER_SECRET_KEY": "bench-api-load",  # both workers must sign alike (see README: team deployments)
        }
        log = open(Path(tmp) / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
        command = [
            str(Path(sys.executable).with_name("gunicorn")),
            *GUNICORN,
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "tuner_service.api.wsgi:app",
        ]
        server = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        try:

            def healthy() -> bool:
                try:
                    return requests.get(base + "/healthz", timeout=2).status_code == 200
                except requests.RequestException:
                    return False

            if not wait_until(healthy, 60, 0.2):
                raise RuntimeError(f"gunicorn did not answer:\n{(Path(tmp) / 'gunicorn.log').read_text()[-3000:]}")
            workers = _children(server.pid)
            study_ids = [s["id"] for s in data.studies]
            phases: dict[str, Any] = {}
            for phase, only in (("healthz", True), ("mix", False)):
                print(f"[bench]   {phase}: {clients} clients for {seconds:.0f} s", flush=True)
                cpu0 = _proc_cpu([server.pid, *workers])
                phases[phase] = Load(base, tokens, study_ids, healthz_only=only).run(clients, seconds, warmup)
                phases[phase]["server_cpu_s"] = _proc_cpu([server.pid, *workers]) - cpu0
            queued = client.llen(prefix + "trials.cpu")
        finally:
            stop_process(server)
            log.close()
            client.close()
    mix, health = phases["mix"], phases["healthz"]
    return {
        "client": _client_library(),
        "gunicorn": " ".join(GUNICORN),
        "clients": clients,
        "seconds": seconds,
        "warmup_s": warmup,
        "trials": data.trials,
        "studies": len(data.studies),
        "mix": MIX,
        "phases": phases,
        "throughput_ratio": ratio(mix["throughput"], health["throughput"]),
        "p50_ratio": ratio(mix["p50_s"], health["p50_s"]),
        "redis_messages_queued": queued,
    }


def markdown(result: dict[str, Any]) -> str:
    phases = result["phases"]
    health, mix = phases["healthz"], phases["mix"]
    setup = (
        f"`gunicorn {result['gunicorn']} 'tuner_service.api.wsgi:app'` on 127.0.0.1, a fresh PostgreSQL database "
        f"holding {result['trials']:,} finished trials over {result['studies']} studies of the clients' team, "
        "broker Redis db 13 (no worker: submitted studies stay queued). Client: "
        f"{result['client']}, {result['clients']} concurrent clients (one bearer token each, members of the "
        f"team) sending requests back to back for {result['seconds']:.0f} s after a {result['warmup_s']:.0f} s "
        "warm-up that is not counted; client, server, PostgreSQL and Redis share this machine's cores. "
        "Mix: 50 % leaderboard reads (half `GET /api/v1/leaderboard?dataset=digits&metric=val_accuracy&limit=20`, "
        "half `GET /api/v1/studies/{id}/leaderboard`), 35 % study reads (`GET /api/v1/studies/{id}`, which "
        "includes progress and ETA), 15 % submissions (`POST /api/v1/studies`, a digits study in the classic "
        "space). **Baseline**: the same clients against `GET /healthz` only (no token check; one small query), "
        "in the same run, just before."
    )

    def row(label: str, data: dict[str, Any], base: dict[str, Any] | None) -> list[str]:
        return [
            label,
            f"{data['requests']:,}",
            f"{data['per_s']:.1f}/s" if "per_s" in data else f"{data['throughput']:.1f}/s",
            fmt_s(data["p50_s"]) + (f" ({fmt_x(ratio(data['p50_s'], base['p50_s']))})" if base else ""),
            fmt_s(data["p99_s"]) + (f" ({fmt_x(ratio(data['p99_s'], base['p99_s']))})" if base else ""),
            str(data["errors"]),
        ]

    rows = [row("**baseline: `GET /healthz` only**", health, None)]
    rows.append(
        [
            "**the mix, all kinds**",
            f"{mix['requests']:,}",
            f"**{mix['throughput']:.1f}/s** ({fmt_x(result['throughput_ratio'])})",
            f"{fmt_s(mix['p50_s'])} ({fmt_x(result['p50_ratio'])})",
            f"{fmt_s(mix['p99_s'])} ({fmt_x(ratio(mix['p99_s'], health['p99_s']))})",
            str(mix["errors"]),
        ]
    )
    labels = {"leaderboard": "  leaderboard reads", "study": "  study reads", "submit": "  submissions"}
    for kind, label in labels.items():
        if kind in mix["kinds"]:
            rows.append(row(label, mix["kinds"][kind], health))
    table = md_table(["requests", "count", "throughput", "p50", "p99", "errors (non-2xx)"], rows)
    per = {k: 1000 * phases[k]["server_cpu_s"] / max(1, phases[k]["requests"]) for k in ("healthz", "mix")}
    cpu = (
        f"CPU during each phase (of {2 * result['seconds']:.0f} core-seconds on 2 cores): server (gunicorn master + "
        f"workers) {health['server_cpu_s']:.0f} s and {mix['server_cpu_s']:.0f} s, that is **{per['healthz']:.1f} ms "
        f"and {per['mix']:.1f} ms of server CPU per request** ({fmt_x(ratio(per['mix'], per['healthz']))}); the "
        f"client {health['client_cpu_s']:.0f} s and {mix['client_cpu_s']:.0f} s; PostgreSQL and Redis the rest. "
        "The machine is saturated in both phases, so the client's own share (largest at the health check's rate) "
        "makes the baseline's throughput a lower bound for the server alone."
    )
    if "redis_messages_queued" in result:
        cpu += (
            f" Messages waiting in Redis afterwards: {result['redis_messages_queued']:,} (one per submitted study, "
            "warm-up included; no worker consumed them)."
        )
    errors = ""
    samples = health["error_samples"] + mix["error_samples"]
    if samples:
        errors = "Error samples:\n\n```\n" + "\n".join(samples) + "\n```"
    return "\n\n".join(part for part in [setup, table, cpu, errors, _reading(result)] if part)


def _reading(result: dict[str, Any]) -> str:
    mix, health = result["phases"]["mix"], result["phases"]["healthz"]
    kinds = mix["kinds"]
    slowest = max(kinds, key=lambda k: kinds[k]["p50_s"]) if kinds else None
    lines = [
        f"- The mix served {mix['throughput']:.0f} requests/s against {health['throughput']:.0f}/s for the "
        f"health check ({fmt_x(result['throughput_ratio'])}), with {mix['errors']} errors in "
        f"{mix['requests']:,} requests.",
    ]
    if slowest:
        lines.append(
            f"- Slowest kind at p50: {slowest} ({fmt_s(kinds[slowest]['p50_s'])}, p99 "
            f"{fmt_s(kinds[slowest]['p99_s'])})."
        )
    lines.append(
        f"- With {result['clients']} clients and 8 server threads (2 workers × 4), a request mostly waits for a "
        "thread: mean latency ≈ clients / throughput (Little's law). Compare throughputs, and read the latencies "
        "as that queue plus the work."
    )
    return "**Reading.**\n\n" + "\n".join(lines)
