"""The ``tuner-service`` command: run the service, workers, migrations, and talk to the API."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuner_service.config import load_settings

# Off a terminal (CI logs, pipes) rich would wrap tables at 80 columns; leaderboards need more.
console = Console(width=None if sys.stdout.isatty() else 180)
DEFAULT_URL = "http://127.0.0.1:8750"


@click.group()
def main() -> None:
    """Hyperparameter search for Keras models, as a service."""


# -- running the service -----------------------------------------------------------------------
@main.command()
@click.option("--port", default=8750, show_default=True)
@click.option("--workers", default=1, show_default=True, help="CPU worker processes to start (0: none).")
@click.option("--gpus", default=None, help="Comma-separated GPU ids: one pinned worker process per GPU.")
def up(port: int, workers: int, gpus: str | None) -> None:
    """Start the API (on 127.0.0.1 only), local workers and the reaper on the configured database and broker.

    On first start it makes a local admin token in $TUNER_HOME/admin-token (mode 0600); the CLI uses it.
    A team deployment serves the API with gunicorn instead (see docker-compose.yml).
    """
    from tuner_service.accounts import admin_token_path
    from tuner_service.config import secure_home
    from tuner_service.launcher import LocalService

    os.umask(0o077)  # everything the service writes (database, secret, tokens, artifacts) is its owner's alone
    settings = load_settings()
    secure_home(settings)
    service = LocalService(settings, port=port, workers=workers, gpus=_gpu_list(gpus)).start()
    console.print(
        f"tuner-service is up at [bold]{service.url}[/]: dashboard {service.url}/, API docs {service.url}/api/v1/docs"
    )
    console.print(f'admin token: {admin_token_path(settings.home)} (curl -H "Authorization: Bearer $(cat ...)")')
    console.print(f"database {settings.database_url}  broker {settings.broker_url}  artifacts {settings.artifacts}")
    _wait_for_signal(service.stop)


@main.command()
@click.option("--gpus", default=None, help="Comma-separated GPU ids: one worker process pinned to each.")
@click.option("--concurrency", default=1, show_default=True, help="CPU worker processes (when no --gpus).")
def worker(gpus: str | None, concurrency: int) -> None:
    """Start trial workers: one process per GPU on the gpu pool (CUDA_VISIBLE_DEVICES, memory growth), or
    N CPU processes on the cpu pool. A worker only ever runs studies of its own pool."""
    import subprocess

    from tuner_service.launcher import pool_queue_name, stop_processes, worker_command, worker_envs

    settings = load_settings()
    envs = worker_envs(settings, _gpu_list(gpus), concurrency)
    procs = [
        subprocess.Popen(worker_command(env["TUNER_WORKER_ID"], pool_queue_name(env["TUNER_POOL"]), "INFO"), env=env)
        for env in envs
    ]
    console.print(f"started {len(procs)} worker process(es) on {settings.broker_url}")
    _wait_for_signal(lambda: stop_processes(procs), procs)


@main.command()
@click.option("--every", default=15.0, show_default=True, help="Seconds between passes.")
@click.option("--once", is_flag=True, help="One pass, then exit.")
def reaper(every: float, once: bool) -> None:
    """Requeue trials of dead workers and wake studies whose messages were lost."""
    from tuner_service.reaper import reap
    from tuner_service.store import Store
    from workers.app import celery_for, enqueue_job, enqueue_trials

    settings = load_settings()
    store, celery = Store(settings.database_url), celery_for(settings)
    while True:
        report = reap(
            store,
            settings,
            lambda pool, n: enqueue_trials(celery, pool, n),
            lambda pool, job_id: enqueue_job(celery, pool, job_id),
        )
        console.print(f"reaper: {report.to_json()}")
        if once:
            return
        time.sleep(every)


@main.group()
def db() -> None:
    """Database schema (Alembic migrations shipped with the package)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: head)."""
    from tuner_service.store.migrate import current, upgrade

    url = load_settings().database_url
    upgrade(url, revision)
    console.print(f"database at revision {current(url)}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('base' drops every table)."""
    from tuner_service.store.migrate import current, downgrade

    url = load_settings().database_url
    downgrade(url, revision)
    console.print(f"database at revision {current(url)}")


@db.command("current")
def db_current() -> None:
    """Print the database's schema revision."""
    from tuner_service.store.migrate import current

    console.print(current(load_settings().database_url) or "empty (run: tuner-service db upgrade)")


# -- accounts (on the server: talks to the database directly) ------------------------------------
@main.group()
def admin() -> None:
    """Teams, users and API tokens."""


def _store() -> Any:
    from tuner_service.store import Store

    return Store(load_settings().database_url)


@admin.command("create-team")
@click.argument("name")
@click.option("--weight", default=1.0, show_default=True, help="Share of worker time relative to other teams.")
@click.option("--max-concurrent", type=int, default=None, help="Quota: trials running at once.")
@click.option("--gpu-hours", type=float, default=None, help="Quota: GPU-hours per day.")
def create_team(name: str, weight: float, max_concurrent: int | None, gpu_hours: float | None) -> None:
    """Create a team."""
    team = _admin(
        lambda: _store().create_team(
            name, share_weight=weight, max_concurrent_trials=max_concurrent, gpu_hours_per_day=gpu_hours
        )
    )
    console.print_json(data=team.to_json())


@admin.command("set-quota")
@click.argument("team")
@click.option("--weight", type=float, default=None)
@click.option("--max-concurrent", type=int, default=None)
@click.option("--gpu-hours", type=float, default=None)
@click.option(
    "--max-model-params",
    type=click.IntRange(min=1),
    default=None,
    help="The largest model (parameters) the team's studies may ask for; below TUNER_MAX_MODEL_PARAMS.",
)
def set_quota(
    team: str, weight: float | None, max_concurrent: int | None, gpu_hours: float | None, max_model_params: int | None
) -> None:
    """Change a team's share weight or quotas."""
    changes = {
        k: v
        for k, v in {
            "share_weight": weight,
            "max_concurrent_trials": max_concurrent,
            "gpu_hours_per_day": gpu_hours,
            "max_model_params": max_model_params,
        }.items()
        if v is not None
    }
    console.print_json(data=_admin(lambda: _store().update_team(team, **changes)).to_json())


@admin.command("create-user")
@click.argument("name")
@click.option("--team", required=True)
@click.option(
    "--role", type=click.Choice(["admin", "team_admin", "member", "viewer"]), default="member", show_default=True
)
def create_user(name: str, team: str, role: str) -> None:
    """Create a user in a team."""
    user = _admin(lambda: _store().create_user(name, team, role))
    console.print(f"user {user.user_name} ({user.role}) in team {user.team_name}")


@admin.command("create-token")
@click.argument("user")
@click.option("--expires-in-days", type=float, default=None, help="Default: never expires.")
@click.option("--label", default=None)
def create_token(user: str, expires_in_days: float | None, label: str | None) -> None:
    """Create an API token; it is printed once and cannot be shown again."""
    from datetime import datetime, timedelta

    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    token, record = _admin(lambda: _store().create_token(user, expires_at=expires, label=label))
    click.echo(token.secret)
    click.echo(f"(token {record.prefix}… for {user}; it is not stored and cannot be shown again)", err=True)


@admin.command("revoke-token")
@click.argument("token_or_prefix")
def revoke_token(token_or_prefix: str) -> None:
    """Revoke a token, named by its secret or by the prefix shown when it was made."""
    count = _admin(lambda: _store().revoke_token(token_or_prefix))
    if not count:
        raise click.ClickException("no active token matches")
    console.print(f"revoked {count} token(s)")


@admin.command("list-teams")
def list_teams() -> None:
    """List teams with their weights and quotas."""
    for team in _store().list_teams():
        console.print_json(data=team.to_json())


def _admin(call: Any) -> Any:
    from tuner_service.errors import TunerError

    try:
        return call()
    except TunerError as exc:
        raise click.ClickException(str(exc)) from exc


# -- talking to the API ------------------------------------------------------------------------
url_option = click.option("--url", default=DEFAULT_URL, show_default=True, envvar="TUNER_URL", help="API address.")
token_option = click.option(
    "--token", default=None, envvar="TUNER_TOKEN", help="API token (default: $TUNER_HOME/admin-token from `up`)."
)


def client_for(url: str, token: str | None) -> Any:
    """A client with the given token, or the local admin token that `tuner-service up` wrote."""
    from tuner_service.accounts import admin_token_path
    from tuner_service.client import Client

    if token is None:
        path = admin_token_path(load_settings().home)
        token = path.read_text().strip() if path.exists() else None
    return Client(url, token=token)


@main.command()
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait/--no-wait", default=False, help="Show progress until the study ends, then its leaderboard.")
@url_option
@token_option
def submit(study_file: Path, wait: bool, url: str, token: str | None) -> None:
    """Submit the study described in STUDY_FILE (JSON)."""
    client = client_for(url, token)
    study = _submit(client, study_file)
    if wait:
        _follow(client, study)


@main.command()
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workers", default=1, show_default=True, help="Local worker processes.")
@click.option("--port", default=0, help="API port (0: any free port).")
def run(study_file: Path, workers: int, port: int) -> None:
    """Start the service on the embedded default, run one study to the end, print its leaderboard, stop."""
    from tuner_service.client import Client
    from tuner_service.launcher import LocalService

    settings = load_settings()
    console.print(f"embedded service: {settings.database_url}, broker {settings.broker_url}")
    with LocalService(settings, port=port, workers=workers, reap_every_s=5.0, access_log=False) as service:
        client = Client(service.url, token=service.admin_token)
        study = _submit(client, study_file)
        final = _follow(client, study, alive=service.workers_alive)
    sys.exit(0 if final["status"] == "completed" else 1)


@main.command()
@click.argument("study_id", required=False, type=int)
@click.option("--dataset", default=None, help="Across studies: data set id or built-in name.")
@click.option("--task", default=None, help="Across studies: task type.")
@click.option("--metric", default=None, help="Across studies: objective name.")
@click.option("--limit", default=10, show_default=True)
@url_option
@token_option
def leaderboard(
    study_id: int | None,
    dataset: str | None,
    task: str | None,
    metric: str | None,
    limit: int,
    url: str,
    token: str | None,
) -> None:
    """Print a study's leaderboard, or the leaderboard across studies."""
    filters = {k: v for k, v in {"dataset": dataset, "task": task, "metric": metric}.items() if v}
    board = _api(lambda: client_for(url, token).leaderboard(study_id, limit=limit, **filters))
    print_leaderboard(board, title=f"study {study_id}" if study_id else "all studies")


@main.command()
@click.argument("study_id", type=int)
@url_option
@token_option
def cancel(study_id: int, url: str, token: str | None) -> None:
    """Cancel a study: running trials stop at their next epoch end."""
    study = _api(lambda: client_for(url, token).cancel(study_id))
    console.print(f"study {study_id} is {study['status']}")


@main.command()
@click.argument("study_id", type=int)
@url_option
@token_option
def pause(study_id: int, url: str, token: str | None) -> None:
    """Pause a study: running trials finish, no new one starts."""
    study = _api(lambda: client_for(url, token).pause(study_id))
    console.print(f"study {study_id} is {study['status']}")


@main.command()
@click.argument("study_id", type=int)
@url_option
@token_option
def resume(study_id: int, url: str, token: str | None) -> None:
    """Resume a paused study."""
    study = _api(lambda: client_for(url, token).resume(study_id))
    console.print(f"study {study_id} is {study['status']}")


@main.command()
@click.argument("study_id", type=int)
@click.argument("level", type=click.Choice(["low", "normal", "high"]))
@url_option
@token_option
def priority(study_id: int, level: str, url: str, token: str | None) -> None:
    """Change a study's priority; it takes effect at the next claim."""
    study = _api(lambda: client_for(url, token).set_priority(study_id, level))
    console.print(f"study {study_id} has priority {study['priority']}")


@main.command("queue")
@click.option("--pool", type=click.Choice(["cpu", "gpu"]), default=None)
@url_option
@token_option
def queue_view(pool: str | None, url: str, token: str | None) -> None:
    """Show running trials and waiting studies with their position, reason and ETA."""
    view = _api(lambda: client_for(url, token).queue(pool))
    running = Table(title="running trials")
    for column in ("study", "team", "trial", "pool", "worker", "gpu", "elapsed s", "epochs"):
        running.add_column(column)
    for r in view["running"]:
        running.add_row(
            f"{r['study_id']} {r['study_name']}", str(r["team"]), str(r["number"]), r["pool"], str(r["worker"]),
            str(r["gpu"] or ""), _fmt(r["elapsed_s"], 1), str(r["epochs_run"]),
        )  # fmt: skip
    waiting = Table(title="waiting studies")
    for column in ("#", "study", "team", "pool", "priority", "left", "waiting because", "next start in s"):
        waiting.add_column(column)
    for w in view["waiting"]:
        waiting.add_row(
            str(w["position"]), f"{w['study_id']} {w['name']}", w["team"], w["pool"], w["priority"],
            str(w["trials_left"]), w["blocked_reason"] or "", _fmt(w["eta_next_start_s"], 1),
        )  # fmt: skip
    console.print(running)
    console.print(waiting)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target-column", default=None, help="CSV: the column to predict.")
@url_option
@token_option
def upload(path: Path, target_column: str | None, url: str, token: str | None) -> None:
    """Upload a data set (.npz with x and y, or .csv with a target column)."""
    record = _api(lambda: client_for(url, token).upload_dataset(path, target_column))
    console.print_json(data=record)


@main.command("lr-find")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("lr-range-test.png"))
@url_option
@token_option
def lr_find(spec_file: Path, plot_path: Path, url: str, token: str | None) -> None:
    """Run a learning-rate range test (SPEC_FILE: dataset, task, architecture, min_lr, max_lr, steps); print
    the suggested rate and save the loss-against-rate plot (log axis) as a PNG."""
    client = client_for(url, token)
    job = _api(lambda: client.start_range_test(json.loads(spec_file.read_text())))
    console.print(f"range test {job['id']} queued")
    with console.status("training while raising the learning rate..."):
        job = client.wait_job(lambda: client.range_test(job["id"]))
    if job["status"] != "completed":
        raise click.ClickException(f"range test {job['id']} failed: {job['error']}")
    suggestion = job["result"]["suggestion"]
    console.print(f"suggested learning rate: [bold]{suggestion['suggested_lr']:.3g}[/]")
    console.print(f"loss lowest at {suggestion['min_loss_lr']:.3g}; diverged at {suggestion['diverged_lr'] or 'none'}")
    if suggestion["half_diverged_lr"]:
        console.print(f"half the divergence rate: {suggestion['half_diverged_lr']:.3g}")
    save_range_plot(job["result"], plot_path)
    console.print(f"plot saved to {plot_path}")


def save_range_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rates = [p["lr"] for p in result["curve"]]
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    axes.plot(rates, [p["loss"] for p in result["curve"]], alpha=0.3, label="loss per batch")
    axes.plot(rates, [p["smoothed"] for p in result["curve"]], label="smoothed")
    suggestion = result["suggestion"]
    axes.axvline(
        suggestion["suggested_lr"], color="green", linestyle="--", label=f"suggested {suggestion['suggested_lr']:.2g}"
    )
    if suggestion["diverged_lr"]:
        axes.axvline(suggestion["diverged_lr"], color="red", linestyle=":", label="diverged")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    smoothed = [p["smoothed"] for p in result["curve"] if p["smoothed"] == p["smoothed"]]
    if smoothed:
        axes.set_ylim(min(smoothed) * 0.9, min(max(smoothed), 4 * min(smoothed)) * 1.1)
    axes.legend()
    axes.set_title("Learning-rate range test")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


@main.command()
@click.argument("study_id", type=int)
@click.argument("trial_id", type=int)
@click.option("--repeats", default=3, show_default=True, help="Retrainings with other seeds.")
@url_option
@token_option
def rerun(study_id: int, trial_id: int, repeats: int, url: str, token: str | None) -> None:
    """Retrain a trial with its own seed and with other seeds; print whether it reproduces and the spread."""
    client = client_for(url, token)
    job = _api(lambda: client.start_rerun(study_id, trial_id, repeats))
    with console.status(f"retraining trial {trial_id} {repeats + 1} times..."):
        job = client.wait_job(lambda: client.rerun(study_id, trial_id, job["id"]))
    if job["status"] != "completed":
        raise click.ClickException(f"rerun failed: {job['error']}")
    result = job["result"]
    spread = result["spread"]
    console.print(f"original {result['objective']}: {_fmt(result['original']['score'])}")
    console.print(f"same seed: {_fmt(result['same_seed']['score'])} (reproduced: {result['reproduced']})")
    low, high = _fmt(spread["min"]), _fmt(spread["max"])
    console.print(f"other seeds: mean {_fmt(spread['mean'])} ± {_fmt(spread['std'])} (min {low}, max {high})")


# -- helpers of the commands above ---------------------------------------------------------------
def _gpu_list(gpus: str | None) -> list[str] | None:
    return [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None


def _wait_for_signal(stop: Any, procs: list | None = None) -> None:
    stopping = {"now": False}

    def handle(_signum: int, _frame: Any) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    while not stopping["now"]:
        if procs and all(p.poll() is not None for p in procs):
            break
        time.sleep(0.5)
    console.print("stopping...")
    stop()


def _api(call: Any) -> Any:
    from tuner_service.client import ApiError

    try:
        return call()
    except ApiError as exc:
        console.print(f"[red]{exc}[/]")
        sys.exit(2)
    except OSError as exc:
        console.print(f"[red]cannot reach the API: {exc}[/]")
        sys.exit(2)


def _submit(client: Any, study_file: Path) -> dict[str, Any]:
    try:
        doc = json.loads(study_file.read_text())
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{study_file} is not valid JSON: {exc}") from exc
    study = _api(lambda: client.submit_study(doc))
    console.print(f"submitted study {study['id']} ({study['name']}): {study['progress']['budget']} trials")
    return study


def _follow(client: Any, study: dict[str, Any], alive: Any = None) -> dict[str, Any]:
    """Show a progress bar (trials done, best so far) until the study ends; then its leaderboard."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
    )
    objective = study["objective_name"]
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"study {study['id']}", total=study["progress"]["budget"], best="")

        def update(current: dict[str, Any]) -> None:
            if alive is not None and not alive():
                raise click.ClickException("a local worker process exited; see its output above")
            best = current.get("best_score")
            label = f"best {objective} {best:.4f}" if best is not None else "no trial finished yet"
            info = current["progress"]
            progress.update(bar, completed=info["done"], total=info["budget"], best=label)

        final = client.wait(study["id"], poll_s=0.5, on_progress=update)
    console.print(f"study {final['id']} {final['status']}" + (f": {final['error']}" if final.get("error") else ""))
    print_leaderboard(client.leaderboard(final["id"], limit=10), title=f"study {final['id']}: {final['name']}")
    return final


def print_leaderboard(board: dict[str, Any], *, title: str) -> None:
    items = board["items"]
    if not items:
        console.print(f"{title}: no completed trials yet")
        return
    names = sorted({k for item in items for k in item["hyperparameters"] if not k.startswith("tuner/")})
    table = Table(title=f"{title} — {board['total']} completed trials, best first")
    for column in ("#", "study", "trial", items[0]["objective"], "best epoch", "seconds", *names):
        table.add_column(column, justify="right" if column not in names else "left")
    for item in items:
        params = [_fmt(item["hyperparameters"].get(n)) for n in names]
        table.add_row(
            str(item["rank"]), str(item["study_id"]), str(item["number"]), _fmt(item["score"]),
            str(item["best_epoch"]), _fmt(item["duration_s"], 1), *params,
        )  # fmt: skip
    console.print(table)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return "" if value is None else str(value)


if __name__ == "__main__":
    main()
