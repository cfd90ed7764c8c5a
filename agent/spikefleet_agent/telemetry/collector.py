"""Counts what the agent did during one telemetry period, and totals for /metrics.

Recording is a few additions under one lock per batch (the inference hot
path); percentiles and histograms are computed once per period in snapshot().
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from spikefleet.v1 import fleet_pb2
from spikefleet_agent.device.base import PowerSample, RunResult

LATENCY_RESERVOIR = 20_000


@dataclass
class _Period:
    start_ms: int
    frames: int = 0
    events: int = 0
    predictions: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    latency_seen: int = 0
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    spike_sums: dict[str, float] = field(default_factory=dict)
    spike_frames: int = 0
    shadow_sha256: str = ""
    shadow_frames: int = 0
    shadow_agreements: int = 0
    overrides: dict[str, int] = field(default_factory=dict)


class Metrics:
    """One agent's Prometheus series, in its own registry (agents may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.frames = Counter("spikefleet_agent_frames", "Frames inferred", registry=self.registry)
        self.events = Counter(
            "spikefleet_agent_events", "DVS events received", registry=self.registry
        )
        self.errors = Counter(
            "spikefleet_agent_errors",
            "Rejected or failed requests",
            ["kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "spikefleet_agent_batch_latency_seconds",
            "Time from a batch's arrival to its predictions",
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0),
            registry=self.registry,
        )
        self.connected = Gauge(
            "spikefleet_agent_connected", "1 while the control stream is up", registry=self.registry
        )
        self.spooled = Gauge(
            "spikefleet_agent_spooled_batches",
            "Telemetry batches waiting for the server",
            registry=self.registry,
        )
        self.overrides = Counter(
            "spikefleet_agent_stream_overrides",
            "Event streams that overrode a key of the program's input spec",
            ["key"],
            registry=self.registry,
        )
        self.installs = Counter(
            "spikefleet_agent_installs", "Install outcomes", ["status"], registry=self.registry
        )


class Collector:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        self._lock = threading.Lock()
        self._period = _Period(start_ms=int(time.time() * 1000))
        self.total_frames = 0

    def record(self, frames: int, result: RunResult, latency_s: float) -> None:
        self.record_messages(frames, result, (latency_s,))

    def record_messages(self, frames: int, result: RunResult, latencies_s: Sequence[float]) -> None:
        """One engine batch that answered several messages, each with its own latency."""
        classes = result.classes
        with self._lock:
            period = self._period
            period.frames += frames
            period.predictions += len(classes)
            self.total_frames += frames
            for latency_s in latencies_s:
                period.latency_seen += 1
                if len(period.latencies_ms) < LATENCY_RESERVOIR:
                    period.latencies_ms.append(latency_s * 1000.0)
                else:
                    slot = random.randrange(period.latency_seen)
                    if slot < LATENCY_RESERVOIR:
                        period.latencies_ms[slot] = latency_s * 1000.0
            if len(classes):
                counts = np.bincount(classes, minlength=len(period.classes))
                if len(counts) > len(period.classes):
                    counts[: len(period.classes)] += period.classes
                    period.classes = counts
                else:
                    period.classes += counts
            if result.spike_counts:
                period.spike_frames += frames
                for layer, per_sample in result.spike_counts.items():
                    period.spike_sums[layer] = period.spike_sums.get(layer, 0.0) + float(
                        np.sum(per_sample)
                    )
        self.metrics.frames.inc(frames)
        for latency_s in latencies_s:
            self.metrics.latency.observe(latency_s)

    def record_events(self, count: int) -> None:
        with self._lock:
            self._period.events += count
        self.metrics.events.inc(count)

    def error(self, kind: str) -> None:
        with self._lock:
            self._period.errors += 1
            self._period.error_kinds[kind] = self._period.error_kinds.get(kind, 0) + 1
        self.metrics.errors.labels(kind=kind).inc()

    def override(self, key: str) -> None:
        """A stream overrode ``key`` of the program's input spec (which permits it)."""
        with self._lock:
            self._period.overrides[key] = self._period.overrides.get(key, 0) + 1
        self.metrics.overrides.labels(key=key).inc()

    def shadow(self, sha256: str, frames: int, agreements: int) -> None:
        """Agreement of a shadow candidate; a period reports one candidate, so counts of
        one replaced mid-period (its evaluation was abandoned) are dropped, not mixed in."""
        with self._lock:
            if self._period.shadow_sha256 != sha256:
                self._period.shadow_frames = self._period.shadow_agreements = 0
            self._period.shadow_sha256 = sha256
            self._period.shadow_frames += frames
            self._period.shadow_agreements += agreements

    def snapshot(
        self,
        *,
        program_sha256: str,
        backend: str,
        inventory: list[fleet_pb2.Device],
        power: list[PowerSample] | None = None,
    ) -> fleet_pb2.TelemetryBatch:
        """Close the current period and return it as a batch (seq is set by the spool)."""
        now_ms = int(time.time() * 1000)
        with self._lock:
            period, self._period = self._period, _Period(start_ms=now_ms)
        batch = fleet_pb2.TelemetryBatch(
            start_unix_ms=period.start_ms,
            end_unix_ms=now_ms,
            program_sha256=program_sha256,
            backend=backend,
            frames=period.frames,
            events=period.events,
            predictions=period.predictions,
            errors=period.errors,
            class_histogram=[int(c) for c in period.classes],
            inventory=inventory,
            error_kinds=period.error_kinds,
            shadow_sha256=period.shadow_sha256,
            shadow_frames=period.shadow_frames,
            shadow_agreements=period.shadow_agreements,
            stream_overrides=period.overrides,
        )
        if period.latencies_ms:
            p50, p95, p99 = np.percentile(np.asarray(period.latencies_ms), [50, 95, 99])
            batch.latency_p50_ms, batch.latency_p95_ms, batch.latency_p99_ms = p50, p95, p99
        if period.spike_frames:
            for layer, total in period.spike_sums.items():
                batch.spike_rates[layer] = total / period.spike_frames
        for sample in power or []:
            batch.power.add(
                unix_ms=sample.unix_ms,
                voltage_mv=sample.voltage_mv,
                current_ma=sample.current_ma,
                power_mw=sample.power_mw,
            )
        return batch
