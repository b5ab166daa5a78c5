"""Every setting of the service, read from the environment in this one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Resolved configuration; every field has a working default for a laptop."""

    home: Path
    database_url: str
    broker_url: str
    artifacts: Path
    # Recordings that outlive one home (hypermodel announcements): TUNER_CACHE_DIR, else the user's cache.
    cache_dir: Path | None = None
    # A data set file as sent (streamed to disk, never held in memory), and what it may take once
    # decompressed (.npz) or parsed (.csv): a small compressed file can hold gigabytes of zeros.
    max_upload_bytes: int = 64 * 1024 * 1024
    max_dataset_bytes: int = 512 * 1024 * 1024
    # Every other request body (JSON, forms): a study is a few kilobytes.
    max_body_bytes: int = 1024 * 1024
    max_parameters: int = 64
    # The largest model a study or range test may ask for (its worst case over the search space), and the
    # activation memory of its largest batch; a team's own limit (admin set-quota) can be lower.
    max_model_params: int = 50_000_000
    max_activation_bytes: int = 2 * 1024**3
    max_trials_limit: int = 10_000
    heartbeat_timeout_s: float = 120.0
    max_trial_retries: int = 2
    # A study below its parallelism with nothing enqueued this long gets the missing messages again.
    wake_after_s: float = 60.0
    # Fair share compares the teams' worker time within this window.
    fair_share_window_s: float = 3600.0
    broker_polling_interval_s: float = 0.2
    # Prepended to every Redis key and channel the broker uses, so several deployments (or test runs) can
    # share one Redis database without seeing each other's messages.
    broker_key_prefix: str = ""
    worker_id: str = ""
    # A worker told to stop hands its trial back at the next epoch end; past this many seconds it interrupts
    # the epoch and hands the trial back from its previous checkpoint (or the start), retries unchanged.
    shutdown_grace_s: float = 60.0
    # A worker process exits (and its launcher starts a fresh one) after this many trials or above this
    # resident memory; 0: never. TensorFlow keeps some graph state per model even after clear_session.
    max_trials_per_process: int = 0
    max_memory_mb: int = 0
    # Import Keras, train one tiny model and load the default data set before a worker takes its first trial.
    worker_warm_up: bool = True
    # Extra seconds spent in each model-based proposal (bayesian, tpe): only for tests and benchmarks that
    # show a slow model holds up no claim.
    proposal_delay_s: float = 0.0
    # Signs the dashboard's session cookies; made once and kept in $TUNER_HOME/secret-key when not given.
    secret_key: str = ""
    # The pool this worker process serves (set per process by the launcher) and hypermodels to offer
    # besides the installed entry points: "name=module:attr,name2=module:attr".
    worker_pool: str = "cpu"
    hypermodels: str = ""
    # A GPU worker process's share of its GPU (set per process by ``tuner-service worker --per-gpu K``): K
    # processes share the GPU's K slots, and the first of them (0) may start trials that take several.
    per_gpu: int = 1
    gpu_process: int = 0
    # A worker announces itself (and the hypermodels it offers) this often; it counts as live for three times as long.
    announce_every_s: float = 15.0
    # Served over HTTPS (directly or behind a proxy): cookies are marked Secure and HSTS is sent.
    secure_cookies: bool = False
    # Failed bearer tokens a client address may send per minute before it is answered 429.
    auth_failures_per_minute: int = 10

    @property
    def is_embedded_broker(self) -> bool:
        return not self.broker_url.startswith(("redis://", "rediss://", "amqp://", "pyamqp://"))

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    home = Path(env.get("TUNER_HOME", "./.tuner")).expanduser().resolve()
    database_url = env.get("TUNER_DATABASE_URL") or f"sqlite:///{home / 'tuner.sqlite'}"
    broker_url = env.get("TUNER_BROKER_URL") or f"sqla+sqlite:///{home / 'broker.sqlite'}"
    artifacts = Path(env.get("TUNER_ARTIFACTS") or home / "artifacts").expanduser().resolve()
    cache_root = env.get("TUNER_CACHE_DIR") or Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "tuner-service"
    cache_dir = Path(cache_root).expanduser().resolve()
    settings = Settings(
        home=home, database_url=database_url, broker_url=broker_url, artifacts=artifacts, cache_dir=cache_dir
    )
    numeric = {
        "TUNER_MAX_UPLOAD_BYTES": ("max_upload_bytes", int),
        "TUNER_MAX_DATASET_BYTES": ("max_dataset_bytes", int),
        "TUNER_MAX_BODY_BYTES": ("max_body_bytes", int),
        "TUNER_MAX_PARAMETERS": ("max_parameters", int),
        "TUNER_MAX_MODEL_PARAMS": ("max_model_params", int),
        "TUNER_MAX_ACTIVATION_BYTES": ("max_activation_bytes", int),
        "TUNER_HEARTBEAT_TIMEOUT": ("heartbeat_timeout_s", float),
        "TUNER_MAX_TRIAL_RETRIES": ("max_trial_retries", int),
        "TUNER_WAKE_AFTER": ("wake_after_s", float),
        "TUNER_FAIR_SHARE_WINDOW": ("fair_share_window_s", float),
        "TUNER_BROKER_POLLING_INTERVAL": ("broker_polling_interval_s", float),
        "TUNER_ANNOUNCE_EVERY": ("announce_every_s", float),
        "TUNER_SHUTDOWN_GRACE": ("shutdown_grace_s", float),
        "TUNER_MAX_TRIALS_PER_PROCESS": ("max_trials_per_process", int),
        "TUNER_MAX_MEMORY_MB": ("max_memory_mb", int),
        "TUNER_AUTH_FAILURES_PER_MINUTE": ("auth_failures_per_minute", int),
        "TUNER_PROPOSAL_DELAY": ("proposal_delay_s", float),
        "TUNER_PER_GPU": ("per_gpu", int),
        "TUNER_GPU_PROCESS": ("gpu_process", int),
    }
    changes: dict[str, object] = {}
    for key, (field, kind) in numeric.items():
        if env.get(key):
            changes[field] = kind(env[key])
    if env.get("TUNER_WORKER_WARM_UP"):
        changes["worker_warm_up"] = env["TUNER_WORKER_WARM_UP"].strip().lower() not in ("0", "false", "no", "off")
    if env.get("TUNER_WORKER_ID"):
        changes["worker_id"] = env["TUNER_WORKER_ID"]
    if env.get("TUNER_BROKER_KEY_PREFIX"):
        changes["broker_key_prefix"] = env["TUNER_BROKER_KEY_PREFIX"]
    if env.get("TUNER_POOL"):
        changes["worker_pool"] = env["TUNER_POOL"]
    if env.get("TUNER_HYPERMODELS"):
        changes["hypermodels"] = env["TUNER_HYPERMODELS"]
    if env.get("TUNER_SECRET_KEY"):
        changes["secret_key"] = env["TUNER_SECRET_KEY"]
    if env.get("TUNER_SECURE_COOKIES"):
        changes["secure_cookies"] = env["TUNER_SECURE_COOKIES"].strip().lower() in ("1", "true", "yes", "on")
    return settings.with_overrides(**changes) if changes else settings


def secure_home(settings: Settings) -> None:
    """The home holds the database, the session secret and the admin token: only its owner may enter it
    (0700), and the files directly in it are the owner's alone (0600)."""
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(settings.home, 0o700)
    for path in settings.home.iterdir():
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o600)


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies: ``TUNER_SECRET_KEY``, or one made once under ``TUNER_HOME``.

    Several API replicas must share it, so a team deployment sets ``TUNER_SECRET_KEY``.
    """
    if settings.secret_key:
        return settings.secret_key
    import secrets

    path = settings.home / "secret-key"
    if not path.exists():
        # Several processes (gunicorn workers) may start at once: write a whole file aside, then link it into
        # place, which only the first one wins; nobody can read a half-written or empty secret.
        settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = settings.home / f".secret-key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process made it first: everyone uses that one
        finally:
            temp.unlink()
    return path.read_text().strip()
