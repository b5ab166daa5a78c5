"""A pooled PostgreSQL connection that died while idle (a server restart, an administrator's kill) is
replaced at its next use; a connection back in the pool only moments ago is used without a ping."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from tuner_service.errors import DatabaseUnavailable
from tuner_service.store import engine as engine_module
from tuner_service.store.engine import make_engine

pytestmark = pytest.mark.integration


def test_a_connection_idle_for_a_while_is_pinged_and_replaced_a_busy_one_is_not(postgres_url, monkeypatch) -> None:
    engine = make_engine(postgres_url)

    def backend() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()

    def kill(pid: int) -> None:
        with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    try:
        first = backend()
        assert backend() == first  # the pool hands the same connection back
        monkeypatch.setattr(engine_module, "PING_IDLE_S", 3600.0)  # in steady use: no ping before a statement
        kill(first)
        with pytest.raises(DatabaseUnavailable):
            backend()
        second = backend()  # the dead connection was dropped
        assert second != first
        monkeypatch.setattr(engine_module, "PING_IDLE_S", 0.0)  # as if it had sat idle: pinged, found dead, replaced
        kill(second)
        assert backend() not in (first, second)
    finally:
        engine.dispose()


def test_a_result_is_described_once_and_the_next_result_anew(postgres_url) -> None:
    """The engine's cursors build a result's description once, however often it is read (SQLAlchemy reads it
    twice per statement), and describe each new result by its own columns."""
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()
            cursor.execute("SELECT 1 AS one, 'x'::text AS two")
            first = cursor.description
            assert cursor.description is first and [c.name for c in first] == ["one", "two"]
            cursor.execute("SELECT 2 AS three")
            assert [c.name for c in cursor.description] == ["three"]
            cursor.execute("SET statement_timeout = 0")
            assert cursor.description is None
            row = conn.execute(text("SELECT 3 AS four, 4 AS five")).one()
            assert row._mapping == {"four": 3, "five": 4}
    finally:
        engine.dispose()
