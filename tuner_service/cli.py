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

from tuner_service.cli_tables import ABBREVIATIONS, Column, duration, fitted_table, header, print_table, sig
from tuner_service.config import load_settings

# Tables fit the terminal, or 80 columns off a terminal (CI logs, pipes); `--wide` and `--json` give every value.
console = Console(width=None if sys.stdout.isatty() else 80)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 100)
DEFAULT_URL = "http://127.0.0.1:8750"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tuner-service", prog_name="tuner-service")
def main() -> None:
    """Hyperparameter search for Keras models, as a service."""


# -- running the service -----------------------------------------------------------------------
@main.command()
@click.option("--port", default=8750, show_default=True, envvar="TUNER_PORT", help="API port (env TUNER_PORT).")
@click.option("--workers", default=1, show_default=True, help="CPU worker processes to start (0: none).")
@click.option("--gpus", default=None, help="Comma-separated GPU ids: one pinned worker process per GPU.")
@click.option("--access-log", is_flag=True, help="Log every HTTP request (off: polling would flood the terminal).")
def up(port: int, workers: int, gpus: str | None, access_log: bool) -> None:
    """Start the API (on 127.0.0.1 only), local workers and the reaper on the configured database and broker.

    On first start it makes a local admin token in $TUNER_HOME/admin-token (mode 0600); it records its address
    in $TUNER_HOME/api-url. The CLI uses both. Worker output goes to $TUNER_HOME/logs/.
    A team deployment serves the API with gunicorn instead (see docker-compose.yml).
    """
    from tuner_service.accounts import admin_token_path, api_url_path
    from tuner_service.config import secure_home
    from tuner_service.launcher import LocalService

    os.umask(0o077)  # everything the service writes (database, secret, tokens, artifacts) is its owner's alone
    settings = load_settings()
    secure_home(settings)
    logs = settings.home / "logs"
    service = LocalService(
        settings, port=port, workers=workers, gpus=_gpu_list(gpus), access_log=access_log, log_dir=logs
    ).start()
    url_file = api_url_path(settings.home)
    url_file.write_text(service.url + "\n")
    console.print(
        f"tuner-service is up at [bold]{service.url}[/]: dashboard {service.url}/, API docs {service.url}/api/v1/docs"
    )
    console.print(f"admin token: {admin_token_path(settings.home)} (print it with `tuner-service token`)")
    console.print(f"database {settings.database_url}  broker {settings.broker_url}  artifacts {settings.artifacts}")
    console.print(f"worker logs: {logs}")

    def stop() -> None:
        if url_file.exists() and url_file.read_text().strip() == service.url:
            url_file.unlink()
        service.stop()

    _wait_for_signal(stop)


@main.command()
@click.option("--gpus", default=None, help="Comma-separated GPU ids: worker processes pinned to each.")
@click.option(
    "--per-gpu",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="K worker processes per GPU: its K slots, 1/K of its memory each (resources.gpu_slots: a trial takes more).",
)
@click.option("--concurrency", default=1, show_default=True, help="CPU worker processes (when no --gpus).")
@click.option("--max-trials-per-process", type=int, default=None, help="Recycle a process after N trials.")
@click.option("--max-memory-mb", type=int, default=None, help="Recycle a process above this resident memory.")
@click.option("--grace", type=float, default=None, help="Seconds a stopping worker waits for an epoch to end.")
def worker(
    gpus: str | None,
    per_gpu: int,
    concurrency: int,
    max_trials_per_process: int | None,
    max_memory_mb: int | None,
    grace: float | None,
) -> None:
    """Start trial workers: K processes per GPU on the gpu pool (CUDA_VISIBLE_DEVICES, a memory share each),
    or N CPU processes on the cpu pool. A worker only ever runs studies of its own pool.

    SIGTERM/SIGINT stops them gracefully: each running trial is handed back at its next epoch end (or after
    the grace period) with a checkpoint, and another worker resumes it. Processes that recycle themselves
    (--max-trials-per-process, --max-memory-mb) or crash are restarted."""
    from tuner_service.launcher import start_workers

    settings = load_settings()
    overrides = {
        "max_trials_per_process": max_trials_per_process,
        "max_memory_mb": max_memory_mb,
        "shutdown_grace_s": grace,
    }
    settings = settings.with_overrides(**{k: v for k, v in overrides.items() if v is not None})
    supervisor = start_workers(settings, _gpu_list(gpus), concurrency, per_gpu=per_gpu, loglevel="INFO")
    console.print(f"started {len(supervisor.procs)} worker process(es) on {settings.broker_url}")
    _wait_for_signal(supervisor.stop, poll=supervisor.poll, alive=supervisor.healthy)


@main.command()
@click.option("--every", default=15.0, show_default=True, help="Seconds between passes.")
@click.option("--once", is_flag=True, help="One pass, then exit.")
def reaper(every: float, once: bool) -> None:
    """Requeue trials of dead workers and wake studies whose messages were lost."""
    from tuner_service.errors import ServiceUnavailable
    from tuner_service.store import Store
    from workers.app import celery_for, reap_through, sending

    settings = load_settings()
    store, celery = Store(settings.database_url), celery_for(settings)
    down: str | None = None
    while True:
        try:
            with sending():
                report = reap_through(celery, store, settings)
        except ServiceUnavailable as exc:  # keep reaping: one line when an outage starts, one when it ends
            if once:
                raise click.ClickException(str(exc)) from exc
            if down != exc.dependency:
                console.print(f"reaper: {exc}; retrying every {every:g} s")
            down = exc.dependency
        else:
            if down is not None:
                console.print(f"reaper: {down} is back")
            down = None
            if once or any(report.to_json().values()):
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


@admin.command("bootstrap")
@click.option("--team", default="admins", show_default=True, help="The first team.")
@click.option("--user", default="admin", show_default=True, help="Its admin user.")
def bootstrap(team: str, user: str) -> None:
    """Make the first team, its admin user and an admin token, once (a second run keeps them).

    The token is written to $TUNER_HOME/admin-token (mode 0600), never printed; the `tuner-service` CLI
    on the same home reads it from there."""
    from tuner_service.accounts import admin_token_path
    from tuner_service.launcher import ensure_admin_token

    settings = load_settings()
    path = admin_token_path(settings.home)
    before = path.read_text().strip() if path.exists() else None
    secret = _admin(
        lambda: ensure_admin_token(_store(), settings, team=team, user=user, label=f"bootstrap admin of {team}")
    )
    state = "kept" if secret == before else "written"
    click.echo(f"admin token for {user} (team {team}) {state} in {path}")


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
url_option = click.option(
    "--url",
    default=None,
    envvar="TUNER_URL",
    help=f"API address (default: the one `up` recorded in $TUNER_HOME/api-url, else {DEFAULT_URL}).",
)
token_option = click.option(
    "--token", default=None, envvar="TUNER_TOKEN", help="API token (default: $TUNER_HOME/admin-token from `up`)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
wide_option = click.option("--wide", is_flag=True, help="Every column and whole values, however wide.")


def api_url(url: str | None) -> str:
    """The API address: --url or TUNER_URL, else the one a local `up` recorded under the home, else the default."""
    from tuner_service.accounts import api_url_path

    if url:
        return url
    path = api_url_path(load_settings().home)
    recorded = path.read_text().strip() if path.exists() else ""
    return recorded or DEFAULT_URL


def local_token() -> str | None:
    """The local admin token that `tuner-service up` wrote under the home, if any."""
    from tuner_service.accounts import admin_token_path

    path = admin_token_path(load_settings().home)
    return path.read_text().strip() if path.exists() else None


def client_for(url: str | None, token: str | None) -> Any:
    """A client for the API at ``url`` (see api_url) with the given token, or the local admin token."""
    from tuner_service.client import Client

    return Client(api_url(url), token=token if token is not None else local_token())


@main.command("url")
@url_option
def url_command(url: str | None) -> None:
    """Print the API address the CLI uses (for scripts: curl "$(tuner-service url)/healthz")."""
    click.echo(api_url(url))


@main.command("token")
def token_command() -> None:
    """Print the local admin token that `up` made (for scripts: -H "Authorization: Bearer $(tuner-service token)")."""
    token = local_token()
    if token is None:
        from tuner_service.accounts import admin_token_path

        path = admin_token_path(load_settings().home)
        raise click.ClickException(f"no admin token at {path}: start the service with `tuner-service up` first")
    click.echo(token)


@main.command()
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait/--no-wait", default=False, help="Show progress until the study ends, then its leaderboard.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the new study's id (for scripts).")
@url_option
@token_option
def submit(study_file: Path, wait: bool, quiet: bool, url: str | None, token: str | None) -> None:
    """Submit the study described in STUDY_FILE (JSON)."""
    client = client_for(url, token)
    study = _submit(client, study_file, quiet=quiet)
    if wait:
        _follow(client, study)


@main.command()
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workers", default=1, show_default=True, help="Local worker processes.")
@click.option("--port", default=0, help="API port (0: any free port).")
def run(study_file: Path, workers: int, port: int) -> None:
    """Start the service on the embedded default, run one study to the end, print its leaderboard, stop.

    The workers' output (TensorFlow's start-up lines, warnings) goes to $TUNER_HOME/logs/.
    """
    from tuner_service.client import Client
    from tuner_service.launcher import LocalService

    settings = load_settings()
    doc = _read_json(study_file)
    logs = settings.home / "logs"
    console.print(f"embedded service: {settings.database_url}, broker {settings.broker_url}; worker logs in {logs}")
    service = LocalService(settings, port=port, workers=workers, reap_every_s=5.0, access_log=False, log_dir=logs)
    with service:
        client = Client(service.url, token=service.admin_token)
        study = _api(lambda: client.submit_study(doc), client.base_url)
        _say_submitted(study)
        final = _follow(client, study, alive=service.workers_alive, logs=logs)
    sys.exit(0 if final["status"] == "completed" else 1)


@main.command()
@click.option("--status", type=click.Choice(["queued", "running", "paused", "completed", "cancelled", "failed"]))
@click.option("--dataset", type=int, default=None, help="Only studies on this data set id.")
@click.option("--limit", default=20, show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="Print only the ids, newest first (for scripts).")
@json_option
@wide_option
@url_option
@token_option
def studies(
    status: str | None,
    dataset: int | None,
    limit: int,
    quiet: bool,
    as_json: bool,
    wide: bool,
    url: str | None,
    token: str | None,
) -> None:
    """List studies, newest first: status, progress, best score and ETA."""
    filters = {k: v for k, v in {"status": status, "dataset": dataset, "limit": limit}.items() if v is not None}
    client = client_for(url, token)
    page = _api(lambda: client.studies(**filters), client.base_url)
    if as_json:
        _print_json(page)
    elif quiet:
        for study in page["items"]:
            click.echo(study["id"])
    else:
        print_studies(page, wide=wide)


@main.command()
@click.argument("study_id", type=int)
@json_option
@url_option
@token_option
def show(study_id: int, as_json: bool, url: str | None, token: str | None) -> None:
    """One study: status, progress, best trial so far and ETA."""
    client = client_for(url, token)
    study = _api(lambda: client.study(study_id), client.base_url)
    if as_json:
        _print_json(study)
        return
    progress = study["progress"]
    counts = ", ".join(f"{n} {status}" for status, n in progress["trials"].items() if n)
    console.print(f"study {study['id']} [bold]{study['name']}[/]: {study['status']}, priority {study['priority']}")
    console.print(f"  {study['algorithm']} search on {study['task_type']}, objective {study['objective_name']}")
    console.print(
        f"  progress: {progress['done']} of {progress['budget']} trials ({progress['percent']:g}%)"
        + (f"; {counts}" if counts else "")
    )
    if study.get("budget_basis", "max_trials") != "max_trials":
        console.print(f"  budget: {progress['budget']} trials from {study['budget_basis']}")
    if study["best_score"] is not None:
        console.print(
            f"  best {study['objective_name']}: {sig(study['best_score'], 4)} (trial {study['best_trial_number']})"
        )
    else:
        console.print("  best: no trial finished yet")
    if progress["eta_s"] is not None:
        console.print(f"  ETA: {duration(progress['eta_s'])}")
    if study.get("error"):
        console.print(f"  error: {study['error']}")


@main.command()
@click.argument("study_id", type=int)
@click.option("--status", default=None, help="Only trials with this status (completed, running, pruned, ...).")
@click.option("--sort", type=click.Choice(["score", "number", "duration", "created"]), default="number")
@click.option("--limit", default=50, show_default=True)
@json_option
@wide_option
@url_option
@token_option
def trials(
    study_id: int,
    status: str | None,
    sort: str,
    limit: int,
    as_json: bool,
    wide: bool,
    url: str | None,
    token: str | None,
) -> None:
    """A study's trials by number (the number that `rerun`, `download` and every URL take)."""
    filters = {k: v for k, v in {"status": status, "sort": sort, "limit": limit}.items() if v is not None}
    client = client_for(url, token)
    page = _api(lambda: client.trials(study_id, **filters), client.base_url)
    if as_json:
        _print_json(page)
        return
    print_trials(page, title=f"study {study_id}: {page['total']} trial(s)", wide=wide)


@main.command()
@click.argument("study_id", required=False, type=int)
@click.option("--dataset", default=None, help="Across studies: data set id or built-in name.")
@click.option("--task", default=None, help="Across studies: task type.")
@click.option("--metric", default=None, help="Across studies: objective name.")
@click.option("--limit", default=10, show_default=True)
@json_option
@wide_option
@url_option
@token_option
def leaderboard(
    study_id: int | None,
    dataset: str | None,
    task: str | None,
    metric: str | None,
    limit: int,
    as_json: bool,
    wide: bool,
    url: str | None,
    token: str | None,
) -> None:
    """Print a study's leaderboard, or the leaderboard across studies."""
    filters = {k: v for k, v in {"dataset": dataset, "task": task, "metric": metric}.items() if v}
    client = client_for(url, token)
    board = _api(lambda: client.leaderboard(study_id, limit=limit, **filters), client.base_url)
    if as_json:
        _print_json(board)
        return
    print_leaderboard(board, title=f"study {study_id}" if study_id else "all studies", wide=wide)


@main.command()
@click.argument("study_id", type=int)
@click.argument("trial", required=False, type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@url_option
@token_option
def download(study_id: int, trial: int | None, output: Path | None, url: str | None, token: str | None) -> None:
    """Download the best model of a study, or trial TRIAL's model, as a .keras file."""
    client = client_for(url, token)
    name = f"study-{study_id}-best.keras" if trial is None else f"study-{study_id}-trial-{trial}.keras"
    dest = output or Path(name)
    _api(lambda: client.download_model(study_id, dest, trial=trial), client.base_url)
    console.print(f"saved {dest} ({dest.stat().st_size} bytes)")


def _control(study_id: int, url: str | None, token: str | None, action: str) -> None:
    client = client_for(url, token)
    study = _api(lambda: getattr(client, action)(study_id), client.base_url)
    console.print(f"study {study_id} is {study['status']}")


@main.command()
@click.argument("study_id", type=int)
@url_option
@token_option
def cancel(study_id: int, url: str | None, token: str | None) -> None:
    """Cancel a study: running trials stop at their next epoch end."""
    _control(study_id, url, token, "cancel")


@main.command()
@click.argument("study_id", type=int)
@url_option
@token_option
def pause(study_id: int, url: str | None, token: str | None) -> None:
    """Pause a study: running trials finish, no new one starts."""
    _control(study_id, url, token, "pause")


@main.command()
@click.argument("study_id", type=int)
@url_option
@token_option
def resume(study_id: int, url: str | None, token: str | None) -> None:
    """Resume a paused study."""
    _control(study_id, url, token, "resume")


@main.command()
@click.argument("study_id", type=int)
@click.argument("level", type=click.Choice(["low", "normal", "high"]))
@url_option
@token_option
def priority(study_id: int, level: str, url: str | None, token: str | None) -> None:
    """Change a study's priority; it takes effect at the next claim."""
    client = client_for(url, token)
    study = _api(lambda: client.set_priority(study_id, level), client.base_url)
    console.print(f"study {study_id} has priority {study['priority']}")


@main.command("queue")
@click.option("--pool", type=click.Choice(["cpu", "gpu"]), default=None)
@json_option
@wide_option
@url_option
@token_option
def queue_view(pool: str | None, as_json: bool, wide: bool, url: str | None, token: str | None) -> None:
    """Show running trials and waiting studies with their position, reason and ETA."""
    client = client_for(url, token)
    view = _api(lambda: client.queue(pool), client.base_url)
    if as_json:
        _print_json(view)
        return
    print_queue(view, wide=wide)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target-column", default=None, help="CSV: the column to predict.")
@url_option
@token_option
def upload(path: Path, target_column: str | None, url: str | None, token: str | None) -> None:
    """Upload a data set (.npz with x and y, or .csv with a target column)."""
    client = client_for(url, token)
    record = _api(lambda: client.upload_dataset(path, target_column), client.base_url)
    _print_json(record)


@main.command("lr-find")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("lr-range-test.png"))
@json_option
@url_option
@token_option
def lr_find(spec_file: Path, plot_path: Path, as_json: bool, url: str | None, token: str | None) -> None:
    """Run a learning-rate range test (SPEC_FILE: dataset, task, architecture, min_lr, max_lr, steps); print
    the suggested rate and save the loss-against-rate plot (log axis) as a PNG."""
    spec = _read_json(spec_file)
    client = client_for(url, token)
    job = _api(lambda: client.start_range_test(spec), client.base_url)
    if not as_json:
        console.print(f"range test {job['id']} queued")
    with console.status("training while raising the learning rate..."):
        job = _api(lambda: client.wait_job(lambda: client.range_test(job["id"])), client.base_url)
    if job["status"] != "completed":
        raise click.ClickException(f"range test {job['id']} failed: {job['error']}")
    save_range_plot(job["result"], plot_path)
    if as_json:
        _print_json(job)
        return
    suggestion = job["result"]["suggestion"]
    diverged = sig(suggestion["diverged_lr"]) if suggestion["diverged_lr"] else "none"
    console.print(f"suggested learning rate: [bold]{sig(suggestion['suggested_lr'])}[/]")
    console.print(f"loss lowest at {sig(suggestion['min_loss_lr'])}; diverged at {diverged}")
    if suggestion["half_diverged_lr"]:
        console.print(f"half the divergence rate: {sig(suggestion['half_diverged_lr'])}")
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
@click.argument("trial", type=int)
@click.option("--repeats", default=3, show_default=True, help="Retrainings with other seeds.")
@json_option
@url_option
@token_option
def rerun(study_id: int, trial: int, repeats: int, as_json: bool, url: str | None, token: str | None) -> None:
    """Retrain trial TRIAL of the study (its number, as on the leaderboard) with its own seed and with other
    seeds; print whether it reproduces and the spread."""
    client = client_for(url, token)
    job = _api(lambda: client.start_rerun(study_id, trial, repeats), client.base_url)
    with console.status(f"retraining trial {trial} of study {study_id} {repeats + 1} times..."):
        job = _api(lambda: client.wait_job(lambda: client.rerun(study_id, trial, job["id"])), client.base_url)
    if job["status"] != "completed":
        raise click.ClickException(f"rerun failed: {job['error']}")
    if as_json:
        _print_json(job)
        return
    result = job["result"]
    spread = result["spread"]
    original = sig(result["original"]["score"], 4)
    console.print(f"trial {trial} of study {study_id}, original {result['objective']}: {original}")
    console.print(f"same seed: {sig(result['same_seed']['score'], 4)} (reproduced: {result['reproduced']})")
    low, high = sig(spread["min"], 4), sig(spread["max"], 4)
    console.print(f"other seeds: mean {sig(spread['mean'], 4)} ± {sig(spread['std'], 2)} (min {low}, max {high})")


# -- helpers of the commands above ---------------------------------------------------------------
def _gpu_list(gpus: str | None) -> list[str] | None:
    return [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None


def _wait_for_signal(stop: Any, *, poll: Any = None, alive: Any = None) -> None:
    """Run until SIGINT/SIGTERM (or until ``alive()`` turns false), calling ``poll()`` meanwhile; then ``stop()``."""
    stopping = {"now": False}

    def handle(_signum: int, _frame: Any) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    while not stopping["now"]:
        if alive is not None and not alive():
            break
        if poll is not None:
            poll()
        time.sleep(0.5)
    console.print("stopping...")
    stop()


def _api(call: Any, url: str | None = None) -> Any:
    """Run an API call; a problem or an unreachable server ends the command with a message, not a traceback."""
    from tuner_service.client import ApiError

    try:
        return call()
    except ApiError as exc:
        err_console.print(f"[red]{exc}[/]", soft_wrap=True)
        sys.exit(2)
    except OSError as exc:
        from tuner_service.accounts import api_url_path

        where = url or DEFAULT_URL
        recorded = api_url_path(load_settings().home)
        stale = recorded.exists() and recorded.read_text().strip() == where
        err_console.print(
            f"[red]cannot reach the API at {where}[/] ({type(exc).__name__})"
            + (f", the address recorded in {recorded} by an `up` that is no longer running" if stale else "")
            + ".\nStart it with `tuner-service up` (in another terminal), or point the CLI at a running server "
            "with TUNER_URL=http://host:port (or --url).",
            soft_wrap=True,  # whole lines: the terminal wraps them, and they stay searchable in logs
        )
        sys.exit(2)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{path} is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{path} is not a UTF-8 text file") from exc


def _print_json(data: Any) -> None:
    """JSON for scripts: plain (no colours, no wrapping) on stdout."""
    click.echo(json.dumps(data, indent=2))


def _submit(client: Any, study_file: Path, *, quiet: bool = False) -> dict[str, Any]:
    doc = _read_json(study_file)
    study = _api(lambda: client.submit_study(doc), client.base_url)
    if quiet:
        click.echo(study["id"])
    else:
        _say_submitted(study)
    return study


def _say_submitted(study: dict[str, Any]) -> None:
    basis = study.get("budget_basis", "max_trials")
    budget = f"{study['progress']['budget']} trials" + ("" if basis == "max_trials" else f" ({basis})")
    console.print(f"submitted study {study['id']} ({study['name']}): {budget}")


def _follow(client: Any, study: dict[str, Any], alive: Any = None, logs: Path | None = None) -> dict[str, Any]:
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
                where = f"its log in {logs}" if logs else "its output above"
                raise click.ClickException(f"a local worker process exited; see {where}")
            best = current.get("best_score")
            label = f"best {objective} {sig(best, 4)}" if best is not None else "no trial finished yet"
            info = current["progress"]
            progress.update(bar, completed=info["done"], total=info["budget"], best=label)

        final = _api(lambda: client.wait(study["id"], poll_s=0.5, on_progress=update), client.base_url)
    console.print(f"study {final['id']} {final['status']}" + (f": {final['error']}" if final.get("error") else ""))
    board = _api(lambda: client.leaderboard(final["id"], limit=10), client.base_url)
    print_leaderboard(board, title=f"study {final['id']}: {final['name']}")
    return final


def _hyperparameter_names(rows: list[dict[str, Any]]) -> list[str]:
    """Hyperparameters in the order people look for them (the classic ones first), Keras Tuner's own hidden."""
    names = {k for row in rows for k in row["hyperparameters"] if not k.startswith("tuner/")}
    first = [n for n in ABBREVIATIONS if n in names]
    return first + sorted(names - set(first))


def print_leaderboard(board: dict[str, Any], *, title: str, wide: bool = False) -> None:
    items = board["items"]
    if not items:
        console.print(f"{title}: no completed trials yet")
        return
    names = _hyperparameter_names(items)
    across = len({item["study_id"] for item in items}) > 1 or title == "all studies"
    objective = items[0]["objective"]
    columns = [Column("#", numeric=True)]
    columns += [Column("study", numeric=True)] if across else []
    columns += [
        Column("trial", numeric=True),
        Column(objective if wide else header(objective), numeric=True),
        Column("epoch", numeric=True),
        Column("time", numeric=True),
    ]
    columns += [Column(n if wide else header(n), optional=True, max_width=10) for n in names]
    rows = []
    for item in items:
        params = [_value(item["hyperparameters"].get(n), wide) for n in names]
        study = [str(item["study_id"])] if across else []
        rows.append(
            [str(item["rank"]), *study, str(item["number"]), _score(item["score"], wide), _text(item["best_epoch"]),
             duration(item["duration_s"]), *params]
        )  # fmt: skip
    table = fitted_table(console, f"{title}: {board['total']} completed trials, best first", columns, rows, wide=wide)
    print_table(console, table, wide=wide)


def print_trials(page: dict[str, Any], *, title: str, wide: bool = False) -> None:
    items = page["items"]
    if not items:
        console.print(f"{title}: no trials yet")
        return
    names = _hyperparameter_names(items)
    columns = [
        Column("trial", numeric=True),
        Column("status", max_width=9),
        Column("score", numeric=True),
        Column("epoch", numeric=True),
        Column("epochs", numeric=True),
        Column("time", numeric=True),
        *[Column(n if wide else header(n), optional=True, max_width=10) for n in names],
    ]
    rows = [
        [str(t["number"]), t["status"], _score(t["score"], wide), _text(t["best_epoch"]), str(t["epochs_run"]),
         duration(t["duration_s"]), *[_value(t["hyperparameters"].get(n), wide) for n in names]]
        for t in items
    ]  # fmt: skip
    print_table(console, fitted_table(console, title, columns, rows, wide=wide), wide=wide)


def print_studies(page: dict[str, Any], *, wide: bool = False) -> None:
    items = page["items"]
    if not items:
        console.print("no studies yet: submit one with `tuner-service submit STUDY.json`")
        return
    columns = [
        Column("id", numeric=True),
        Column("name", max_width=24),
        Column("status"),
        Column("done", numeric=True),
        Column("best", numeric=True),
        Column("objective", optional=True, max_width=12),
        Column("ETA", numeric=True, optional=True),
        Column("priority", optional=True),
    ]
    rows = [
        [str(s["id"]), s["name"], s["status"], f"{s['progress']['done']}/{s['progress']['budget']}",
         _score(s["best_score"], wide), s["objective_name"], duration(s["progress"]["eta_s"]), s["priority"]]
        for s in items
    ]  # fmt: skip
    title = f"{page['total']} {'study' if page['total'] == 1 else 'studies'}, newest first"
    print_table(console, fitted_table(console, title, columns, rows, wide=wide), wide=wide)


def print_queue(view: dict[str, Any], *, wide: bool = False) -> None:
    running = [
        [f"{r['study_id']}", str(r["number"]), str(r["worker"]), r["pool"], str(r["epochs_run"]),
         duration(r["elapsed_s"]), str(r["team"]), r["study_name"]]
        for r in view["running"]
    ]  # fmt: skip
    columns = [
        Column("study", numeric=True),
        Column("trial", numeric=True),
        Column("worker", max_width=12),
        Column("pool"),
        Column("epochs", numeric=True),
        Column("elapsed", numeric=True),
        Column("team", optional=True, max_width=10),
        Column("name", optional=True, max_width=20),
    ]
    if running:
        print_table(console, fitted_table(console, "running trials", columns, running, wide=wide), wide=wide)
    else:
        console.print("no trial is running")
    from tuner_service.queue import READY

    waiting = [
        [str(w["position"]), str(w["study_id"]), w["priority"], str(w["trials_left"]),
         w.get("waiting_because") or w["blocked_reason"] or READY, _next_start(w), duration(w["eta_done_s"]),
         w["team"], w["pool"]]
        for w in view["waiting"]
    ]  # fmt: skip
    columns = [
        Column("#", numeric=True),
        Column("study", numeric=True),
        Column("priority"),
        Column("left", numeric=True),
        Column("waiting because", max_width=None if wide else 30),
        Column("starts in", numeric=True),
        Column("done in", numeric=True, optional=True),
        Column("team", optional=True, max_width=10),
        Column("pool", optional=True),
    ]
    if waiting:
        title = "waiting studies, in the order workers take them"
        print_table(console, fitted_table(console, title, columns, waiting, wide=wide), wide=wide)
    else:
        console.print("no study is waiting")


def _next_start(row: dict[str, Any]) -> str:
    """When the study's next trial starts: "now" for a ready study first in line, blank when unknown."""
    eta = row["eta_next_start_s"]
    if eta is None:
        return ""
    if eta < 1 and row["blocked_reason"] is None:
        return "now"
    return duration(eta)


def _score(value: Any, wide: bool) -> str:
    return _text(value) if wide else sig(value, 4)


def _value(value: Any, wide: bool) -> str:
    return _text(value) if wide else sig(value, 3)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


if __name__ == "__main__":
    main()
