"""Alembic migrations of the tuner-service schema (shipped with the package)."""
