"""Benchmarks of the tuner service: ``python -m bench [--quick] [--only NAME ...]``.

Each benchmark is one module with ``NAME``, ``TITLE``, ``run(quick: bool) -> dict`` and
``markdown(result: dict) -> str``, registered in ``bench.__main__.BENCHMARKS``. Results are ratios
against a baseline measured in the same run; nothing here asserts on a time.

Importing this package is cheap (the benchmark's own Celery worker imports it).
"""
