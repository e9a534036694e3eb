"""Prometheus metrics of the server (prometheus-client), in a registry of the app's own so tests can build many.

Latency is split by stage as text-embeddings-inference names them: tokenization (the request's thread, before
its features reach the batcher), queue (waiting for the worker) and inference (its forward passes).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKENS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("bertkit_requests", "HTTP requests by route, model and status code",
                                ["route", "model", "status"], registry=r)
        self.latency = Histogram("bertkit_request_duration_seconds", "Time from request to response",
                                 ["route", "model"], buckets=SECONDS, registry=r)
        self.tokenization = Histogram("bertkit_tokenization_duration_seconds",
                                      "Per request: reading and tokenizing inputs", ["model"], buckets=SECONDS,
                                      registry=r)
        self.queue = Histogram("bertkit_queue_duration_seconds", "Per request: waiting for the inference worker",
                               ["model"], buckets=SECONDS, registry=r)
        self.inference = Histogram("bertkit_inference_duration_seconds", "Per request: its forward passes",
                                   ["model"], buckets=SECONDS, registry=r)
        self.batch_size = Histogram("bertkit_batch_size", "Rows (sequences) per forward pass", ["model"],
                                    buckets=ROWS, registry=r)
        self.batch_tokens = Histogram("bertkit_batch_tokens", "Padded tokens (rows x longest) per forward pass",
                                      ["model"], buckets=TOKENS, registry=r)
        self.forward = Histogram("bertkit_forward_duration_seconds", "Time of one forward pass", ["model"],
                                 buckets=SECONDS, registry=r)
        self.computed = Counter("bertkit_computed_tokens", "Token positions computed (padding included)",
                                ["model"], registry=r)
        self.padding = Counter("bertkit_padding_tokens", "Padding positions computed", ["model"], registry=r)
        self.padding_share = Gauge("bertkit_padding_share", "Share of computed positions that were padding, so far",
                                   ["model"], registry=r)
        self.queue_tokens = Gauge("bertkit_queue_tokens", "Real tokens waiting for the inference worker",
                                  ["model"], registry=r)
        self.queue_limit = Gauge("bertkit_queue_tokens_limit", "The queue's bound in tokens (--max-queue-tokens)",
                                 ["model"], registry=r)
        self.dropped = Counter("bertkit_dropped_inputs", "Rows dropped because their client disconnected",
                               ["model"], registry=r)
        self.in_flight = Gauge("bertkit_requests_in_flight", "Requests being handled", registry=r)

    def batch(self, model: str, stats) -> None:
        self.batch_size.labels(model).observe(stats.rows)
        self.batch_tokens.labels(model).observe(stats.padded_tokens)
        self.forward.labels(model).observe(stats.seconds)
        self.computed.labels(model).inc(stats.padded_tokens)
        self.padding.labels(model).inc(stats.padded_tokens - stats.real_tokens)
        computed = self.computed.labels(model)._value.get()
        self.padding_share.labels(model).set(self.padding.labels(model)._value.get() / max(computed, 1))
