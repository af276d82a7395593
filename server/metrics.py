"""Prometheus metrics of the service, named after Triton's (`nv_inference_*`) under a `miscause_` prefix.

Each server owns its registry, so several servers in one process (tests, embedders) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Counters, histograms and gauges by model; `status` is the gRPC status code name (OK, ...)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter("miscause_inference_request", "Inference requests by model and status",
                                ["model", "status"], registry=registry)
        self.inferences = Counter("miscause_inference_count", "Images inferred, by model and request status",
                                  ["model", "status"], registry=registry)
        self.executions = Counter("miscause_inference_exec_count", "Batches executed by model",
                                  ["model"], registry=registry)
        self.queue_seconds = Histogram("miscause_inference_queue_duration_seconds",
                                       "Time a request waited in its model's queue", ["model"],
                                       buckets=LATENCY_BUCKETS, registry=registry)
        self.compute_seconds = Histogram("miscause_inference_compute_duration_seconds",
                                         "Time one batch spent computing", ["model"],
                                         buckets=LATENCY_BUCKETS, registry=registry)
        self.request_seconds = Histogram("miscause_inference_request_duration_seconds",
                                         "End-to-end time of a request inside the server", ["model"],
                                         buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("miscause_inference_batch_size", "Images per executed batch", ["model"],
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.queue_depth = Gauge("miscause_inference_queue_depth", "Requests waiting in a model's queue",
                                 ["model"], registry=registry)
        self.pending = Gauge("miscause_inference_pending_request_count",
                             "Requests accepted by a model and not yet answered: queued or computing", ["model"],
                             registry=registry)
        self.rejected = Counter("miscause_inference_rejected", "Requests the queue policy or a drain refused, by "
                                "reason: queue_full, queue_wait (estimated on arrival), queue_timeout, drain",
                                ["model", "reason"], registry=registry)
        self.model_ready = Gauge("miscause_model_ready", "1 when the model is loaded and warmed up",
                                 ["model"], registry=registry)

    def serve(self, host: str, port: int) -> tuple[object, int]:
        """Expose /metrics over HTTP; (the HTTP server, to shut down later, and the port it took)."""
        httpd, _ = start_http_server(port, addr=host, registry=self.registry)
        return httpd, httpd.server_port
