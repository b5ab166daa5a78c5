"""Engine creation: SQLite gets WAL, a busy timeout and immediate write transactions."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as exc_module
from sqlalchemy.engine import make_url

from tuner_service.errors import DatabaseUnavailable

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, foreign_keys: bool = True, **kwargs: Any) -> Engine:
    """Create an engine for ``url``; SQLite files are created with their parent folder.

    ``foreign_keys=False`` is for migrations only: SQLite's batch mode rebuilds a table by copying it,
    and with foreign keys enforced, dropping the old copy would fail or cascade into the child rows.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if parsed.drivername == "postgresql":
            url = str(parsed.set(drivername="postgresql+psycopg"))
        if parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"cursor_factory": _described_once(), **kwargs.get("connect_args", {})}
        engine = create_engine(url, future=True, **kwargs)
        _ping_idle_connections(engine)
        _report_outages(engine)
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)
    _configure_sqlite(engine, foreign_keys)
    return engine


@functools.cache
def _described_once() -> type:
    """psycopg's cursor, describing each result once: SQLAlchemy reads a result's ``description`` twice, and
    psycopg builds a new ``Column`` for each of its columns on every read; at a few dozen columns a statement that
    was a sixth of a claim's CPU in the worker."""
    import psycopg

    class DescribedOnce(psycopg.Cursor):
        _described: tuple[Any, Any] = (None, None)

        @property
        def description(self) -> Any:
            result = self.pgresult
            if result is None or self._described[0] is not result:
                self._described = (result, super().description)
            return self._described[1]

    return DescribedOnce


# A pooled connection idle for longer than this is tested before use (a server restart drops it).
PING_IDLE_S = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections that sat idle only: a claim makes three transactions,
    and a worker reusing its connection every few milliseconds would pay a round trip for each. A connection
    found dead is replaced (the pool retries the checkout with a new one); one that dies while in use fails
    like any statement during an outage (:func:`_report_outages`)."""

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_IDLE_S:
            return
        try:
            dbapi_connection.execute("SELECT 1")
            dbapi_connection.rollback()  # end the transaction the driver began for it
        except Exception as exc:  # any failure: the connection is not usable
            raise exc_module.DisconnectionError(str(exc)) from exc


def _report_outages(engine: Engine) -> None:
    """Turn "the server is not there" into :class:`DatabaseUnavailable`, which callers can wait out (workers)
    or answer with 503 (the API), instead of a driver error that looks like a bug."""

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> BaseException | None:
        if context.is_pre_ping:
            return None  # the pool reconnects on its own; a failure there surfaces on the real connect
        if context.is_disconnect or _is_connection_failure(context.original_exception):
            first_line = str(context.original_exception).strip().splitlines()[0:1] or ["connection lost"]
            return DatabaseUnavailable(f"the database does not answer: {first_line[0]}")
        return None


def _is_connection_failure(exc: BaseException) -> bool:
    # psycopg reports a refused or dropped connection as OperationalError without SQLSTATE, or with class 08
    # (connection exception) / 57 (operator intervention: shutdown, admin shutdown, cannot connect now).
    # Deadlocks, serialization failures and lock timeouts are OperationalErrors too, but are retried elsewhere.
    try:
        import psycopg
    except ImportError:  # pragma: no cover - only PostgreSQL engines get here, and they need psycopg
        return False
    if not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state[:2] in ("08", "57")


def _configure_sqlite(engine: Engine, foreign_keys: bool) -> None:
    # pysqlite's own transaction handling defers BEGIN and cannot take the write lock up front;
    # take over so that a write session starts with BEGIN IMMEDIATE (our row lock on SQLite).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
