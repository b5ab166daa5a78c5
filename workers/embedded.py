"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, polling faster than its 1 s default.

kombu forwards every transport option of this transport to ``create_engine``, so the polling interval
cannot travel as an option; it is a class attribute here instead.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqlalchemy


class Transport(kombu_sqlalchemy.Transport):
    """kombu's SQLAlchemy transport with a configurable polling interval."""

    polling_interval = 0.2


def install(polling_interval_s: float) -> None:
    """Route ``sqla+`` broker URLs of this process to :class:`Transport`."""
    Transport.polling_interval = polling_interval_s
    TRANSPORT_ALIASES["sqla"] = f"{__name__}:Transport"
    TRANSPORT_ALIASES["sqlalchemy"] = f"{__name__}:Transport"


def purge_delivered(broker_url: str) -> int:
    """Delete the messages the transport already handed out: it only marks them invisible, so without
    this the broker file grows by one row per trial forever. A message a worker still holds is restored
    as a new row on a graceful stop, so deleting the old one loses nothing."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(broker_url.split("+", 1)[1])
    try:
        if "kombu_message" not in inspect(engine).get_table_names():
            return 0
        with engine.begin() as conn:
            return conn.execute(text("DELETE FROM kombu_message WHERE visible = 0")).rowcount or 0
    finally:
        engine.dispose()
