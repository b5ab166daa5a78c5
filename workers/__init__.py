"""Celery workers that run tuner-service trials, one trial per task."""
