"""WSGI entry point for gunicorn: ``gunicorn 'tuner_service.api.wsgi:app'`` (schema must be migrated)."""

from tuner_service.api import create_app

app = create_app()
