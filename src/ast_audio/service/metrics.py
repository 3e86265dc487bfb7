"""Prometheus metrics of the service: requests by route and status, latency, batch sizes, queue depth, live streams."""

from __future__ import annotations

import time
from typing import Any

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
        self.dropped = Counter("ast_audio_dropped_windows",
                               "Windows dropped unscored: their client disconnected, the server was stopping, or "
                               "the model fell behind a live stream", registry=self.registry)
        self.streams_active = Gauge("ast_audio_streams_active", "Open /v1/stream connections", registry=self.registry)
        self.streams = Counter("ast_audio_streams", "/v1/stream connections ended, by how: the close code the "
                               "server sent (1000 after the summary), or disconnected (the client left)", ["end"],
                               registry=self.registry)
        self.stream_windows = Counter("ast_audio_stream_windows", "Windows of /v1/stream streams scored",
                                      registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """ASGI middleware counting each request by route ("/v1/..." or "other") and status, and timing it.

    Plain ASGI, not Starlette's BaseHTTPMiddleware: that one wraps `receive` so that a route never sees its
    client's disconnect (`Request.is_disconnected` stays False), and the service drops a departed client's
    windows on that signal."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def tracked_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            route = scope["path"] if scope["path"].startswith("/v1/") else "other"
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)
