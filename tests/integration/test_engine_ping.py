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
