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
