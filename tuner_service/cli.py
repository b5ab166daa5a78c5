"""The ``tuner-service`` command: run the service, workers, migrations, and talk to the API."""

from __future__ import annotations

import json
import signal
import sys
import time
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
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8750, show_default=True)
@click.option("--workers", default=1, show_default=True, help="CPU worker processes to start (0: none).")
@click.option("--gpus", default=None, help="Comma-separated GPU ids: one pinned worker process per GPU.")
def up(host: str, port: int, workers: int, gpus: str | None) -> None:
    """Start the API, local workers and the reaper on the configured database and broker."""
    from tuner_service.launcher import LocalService

    settings = load_settings()
    service = LocalService(settings, host=host, port=port, workers=workers, gpus=_gpu_list(gpus)).start()
    console.print(f"tuner-service is up at [bold]{service.url}[/] (API docs: {service.url}/api/v1/docs)")
    console.print(f"database {settings.database_url}  broker {settings.broker_url}  artifacts {settings.artifacts}")
    _wait_for_signal(service.stop)


@main.command()
@click.option("--gpus", default=None, help="Comma-separated GPU ids: one worker process pinned to each.")
@click.option("--concurrency", default=1, show_default=True, help="CPU worker processes (when no --gpus).")
@click.option("--queue", default="trials", show_default=True, help="Celery queue (resource pool) to serve.")
def worker(gpus: str | None, concurrency: int, queue: str) -> None:
    """Start trial workers: one process per GPU (CUDA_VISIBLE_DEVICES, memory growth) or N CPU processes."""
    import subprocess

    from tuner_service.launcher import stop_processes, worker_command, worker_envs

    settings = load_settings()
    envs = worker_envs(settings, _gpu_list(gpus), concurrency)
    procs = [subprocess.Popen(worker_command(env["TUNER_WORKER_ID"], queue, "INFO"), env=env) for env in envs]
    console.print(f"started {len(procs)} worker process(es) on {settings.broker_url}")
    _wait_for_signal(lambda: stop_processes(procs), procs)


@main.command()
@click.option("--every", default=15.0, show_default=True, help="Seconds between passes.")
@click.option("--once", is_flag=True, help="One pass, then exit.")
def reaper(every: float, once: bool) -> None:
    """Requeue trials of dead workers and wake studies whose messages were lost."""
    from tuner_service.reaper import reap
    from tuner_service.store import Store
    from workers.app import celery_for, enqueue_trials

    settings = load_settings()
    store, celery = Store(settings.database_url), celery_for(settings)
    while True:
        report = reap(store, settings, lambda study_id, n: enqueue_trials(celery, study_id, n))
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


# -- talking to the API ------------------------------------------------------------------------
url_option = click.option("--url", default=DEFAULT_URL, show_default=True, envvar="TUNER_URL", help="API address.")


@main.command()
@click.argument("study_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait/--no-wait", default=False, help="Show progress until the study ends, then its leaderboard.")
@url_option
def submit(study_file: Path, wait: bool, url: str) -> None:
    """Submit the study described in STUDY_FILE (JSON)."""
    from tuner_service.client import Client

    client = Client(url)
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
    with LocalService(settings, port=port, workers=workers, reap_every_s=5.0) as service:
        client = Client(service.url)
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
def leaderboard(study_id: int | None, dataset: str | None, task: str | None, metric: str | None, limit: int, url: str):
    """Print a study's leaderboard, or the leaderboard across studies."""
    from tuner_service.client import Client

    filters = {k: v for k, v in {"dataset": dataset, "task": task, "metric": metric}.items() if v}
    board = _api(lambda: Client(url).leaderboard(study_id, limit=limit, **filters))
    print_leaderboard(board, title=f"study {study_id}" if study_id else "all studies")


@main.command()
@click.argument("study_id", type=int)
@url_option
def cancel(study_id: int, url: str) -> None:
    """Cancel a study: running trials stop at their next epoch end."""
    from tuner_service.client import Client

    study = _api(lambda: Client(url).cancel(study_id))
    console.print(f"study {study_id} is {study['status']}")


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target-column", default=None, help="CSV: the column to predict.")
@url_option
def upload(path: Path, target_column: str | None, url: str) -> None:
    """Upload a data set (.npz with x and y, or .csv with a target column)."""
    from tuner_service.client import Client

    record = _api(lambda: Client(url).upload_dataset(path, target_column))
    console.print_json(data=record)


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
