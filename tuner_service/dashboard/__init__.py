"""The web dashboard: server-rendered pages under ``/`` to watch, compare and steer searches, signed in with
an API token. It uses the same store, accounts and team scoping as the REST API, and loads nothing from
the internet (plotly.js is served from the installed ``plotly`` package)."""

from __future__ import annotations

from tuner_service.dashboard import (  # noqa: F401 - each module adds its routes to the blueprint
    assets,
    datasets_page,
    lr_range_page,
    new_study_page,
    queue_page,
    session,
    study_pages,
    trial_page,
)
from tuner_service.dashboard.blueprint import bp

__all__ = ["bp"]
