"""Prometheus metrics of one server (its own CollectorRegistry, so several servers
can live in one process, as in tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

from spikefleet_server.config import split_address


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.conversions = Counter(
            "spikefleet_conversions_total",
            "Conversions finished, by outcome (ok, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.conversion_failures = Counter(
            "spikefleet_conversion_failures_total",
            "Conversions refused or failed, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.conversion_seconds = Histogram(
            "spikefleet_conversion_duration_seconds",
            "Time from upload complete to program stored",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.rpcs = Counter(
            "spikefleet_grpc_requests_total",
            "gRPC calls by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "spikefleet_grpc_request_duration_seconds",
            "gRPC call duration by method",
            ["method"],
            registry=self.registry,
        )
        self.registry_programs = Gauge(
            "spikefleet_registry_programs", "Programs stored", registry=self.registry
        )
        self.registry_bytes = Gauge(
            "spikefleet_registry_bytes", "Bytes of signed programs stored", registry=self.registry
        )

    def watch_registry(self, stats: Callable[[], tuple[int, int]]) -> None:
        self.registry_programs.set_function(lambda: stats()[0])
        self.registry_bytes.set_function(lambda: stats()[1])

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        self.rpcs.labels(method, code).inc()
        self.rpc_seconds.labels(method).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, address: str) -> tuple[Any, int]:
        """Serve ``/metrics`` over HTTP; returns (server, bound port)."""
        host, port = split_address(address)
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server, server.server_address[1]
