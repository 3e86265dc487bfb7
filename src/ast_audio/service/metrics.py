"""Prometheus metrics of the service: requests by route and status, latency, batch sizes, queue depth."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ServiceMetrics:
    """One registry per app, so several apps (tests, workers) never share counters."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ast_audio_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("ast_audio_request_seconds", "Request latency by route", ["route"],
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=self.registry)
        self.batch_sizes = Histogram("ast_audio_batch_size", "Windows per model call",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.queue_depth = Gauge("ast_audio_queue_windows", "Windows waiting for the model", registry=self.registry)
        self.dropped = Counter("ast_audio_dropped_windows", "Windows dropped because their client disconnected",
                               registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
