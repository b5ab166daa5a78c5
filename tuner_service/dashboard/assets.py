"""The dashboard's own stylesheet and script, and plotly.js as shipped inside the ``plotly`` package: every
byte a page loads is served by the app, so the dashboard works with no internet."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from flask import Response, abort, send_file, send_from_directory, url_for

from tuner_service.dashboard.blueprint import bp

STATIC = Path(__file__).parent / "static"
YEAR = 365 * 24 * 3600


@cache
def asset_version() -> str:
    """A digest of the static files: part of their URLs, so a browser may cache them for a year."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


@cache
def plotly_js() -> tuple[Path, str]:
    """plotly.min.js inside the installed ``plotly`` package, and the package's version."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js", plotly.__version__


@bp.get("/assets/<version>/<name>")
def asset(version: str, name: str) -> Response:
    """dashboard.css, dashboard.js (any version in the URL serves the current file)."""
    return send_from_directory(STATIC, name, max_age=YEAR if version == asset_version() else 0)


@bp.get("/assets/vendor/plotly-<version>.min.js")
def plotly(version: str) -> Response:
    path, installed = plotly_js()
    if not path.is_file():
        abort(404, "plotly.min.js is not in the installed plotly package")
    return send_file(path, mimetype="text/javascript", max_age=YEAR if version == installed else 0)


@bp.context_processor
def _asset_urls() -> dict[str, object]:
    def asset_url(name: str) -> str:
        return url_for("dashboard.asset", version=asset_version(), name=name)

    def plotly_url() -> str:
        return url_for("dashboard.plotly", version=plotly_js()[1])

    return {"asset_url": asset_url, "plotly_url": plotly_url}
