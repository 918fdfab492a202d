"""Prometheus metrics of one application (its own registry, so several apps may live in a process)."""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the route)

disable_created_metrics()  # no *_created series: they double the output and nobody graphs them

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    """Request counts and latency by endpoint and status, queue time, batch sizes, in-flight requests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("amplify_requests_total", "HTTP requests by endpoint and status",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("amplify_request_duration_seconds", "HTTP request latency by endpoint and status",
                                 ["endpoint", "status"], buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("amplify_requests_in_flight", "HTTP requests being handled", registry=r)
        self.queue_time = Histogram("amplify_queue_seconds", "time a request waited for its batch",
                                    ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.model_time = Histogram("amplify_model_seconds", "model time of one batch", ["endpoint"],
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("amplify_batch_size", "samples per model call", ["endpoint"],
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("amplify_batch_requests", "requests per model call", ["endpoint"],
                                        buckets=_BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("amplify_queue_depth", "requests waiting for the model", registry=r)
        self.ws_connections = Gauge("amplify_websocket_connections", "open WebSocket (openpi protocol) connections",
                                    registry=r)
        self.ready = Gauge("amplify_ready", "1 once the model is loaded and warm", registry=r)

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(lambda: float(depth()))

    def observe_batch(self, endpoint: str, rows: int, requests: int, queue_times: list[float], model_s: float) -> None:
        """Called by the batcher after each model call."""
        self.batch_size.labels(endpoint).observe(rows)
        self.batch_requests.labels(endpoint).observe(requests)
        self.model_time.labels(endpoint).observe(model_s)
        for q in queue_times:
            self.queue_time.labels(endpoint).observe(q)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
