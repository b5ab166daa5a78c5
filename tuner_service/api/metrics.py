"""Prometheus ``/metrics``: queue depth per pool, running trials, trial durations, failures, retries.

Values are read from the database at scrape time, so every API replica reports the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tuner_service.api import services
from tuner_service.queue import POOLS

bp = Blueprint("metrics", __name__)


class StoreCollector:
    """Collects the service's metrics from the store."""

    def __init__(self, store: Any, window_s: float) -> None:
        self.store = store
        self.window_s = window_s

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("tuner_queue_depth", "Trials owed by active, unpaused studies", labels=["pool"])
        running = GaugeMetricFamily("tuner_trials_running", "Trials running now", labels=["pool"])
        for pool in POOLS:
            studies, _ = self.store.queue_snapshot(pool, self.window_s)
            depth.add_metric([pool], sum(s.owed for s in studies if s.status != "paused"))
            running.add_metric([pool], sum(s.running for s in studies))
        yield depth
        yield running
        stats = self.store.trial_statistics()
        finished = CounterMetricFamily(
            "tuner_trials_finished", "Trials finished, by outcome", labels=["pool", "status"]
        )
        for (pool, status), count in stats["finished"].items():
            finished.add_metric([pool, status], count)
        yield finished
        retries = CounterMetricFamily("tuner_trial_retries", "Reruns of abandoned trials", labels=["pool"])
        for pool, count in stats["retries"].items():
            retries.add_metric([pool], count)
        yield retries
        durations = HistogramMetricFamily(
            "tuner_trial_duration_seconds", "Duration of completed trials", labels=["pool"]
        )
        for pool, (buckets, total) in stats["durations"].items():
            durations.add_metric([pool], buckets, sum_value=total)
        yield durations
        studies = GaugeMetricFamily("tuner_studies", "Studies by status", labels=["status"])
        for status, count in stats["studies"].items():
            studies.add_metric([status], count)
        yield studies


@bp.get("/metrics")
def metrics() -> Response:
    svc = services()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(svc.store, svc.settings.fair_share_window_s))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
