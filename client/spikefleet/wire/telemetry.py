"""The TelemetryQuery service's summary: stored telemetry summed up per agent and per
program over a time range (what ``Client.telemetry`` returns and the server sends)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from spikefleet.v1 import telemetry_pb2


@dataclass
class TelemetryStats:
    key: str  # the agent id, or the program sha256
    batches: int
    frames: int
    events: int
    predictions: int
    errors: int
    error_kinds: dict[str, int]
    first_unix_ms: int
    last_unix_ms: int
    frames_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    class_histogram: list[int]
    spike_rates: dict[str, float]
    shadow_frames: int
    shadow_agreements: int
    related: list[str] = field(default_factory=list)  # an agent's programs, a program's agents

    @property
    def shadow_agreement(self) -> float | None:
        """Top-1 agreement of the shadow program, when one ran."""
        return self.shadow_agreements / self.shadow_frames if self.shadow_frames else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shadow_agreement": self.shadow_agreement}

    def to_proto(self) -> telemetry_pb2.TelemetryStats:
        return telemetry_pb2.TelemetryStats(
            key=self.key,
            batches=self.batches,
            frames=self.frames,
            events=self.events,
            predictions=self.predictions,
            errors=self.errors,
            error_kinds=self.error_kinds,
            first_unix_ms=self.first_unix_ms,
            last_unix_ms=self.last_unix_ms,
            frames_per_s=self.frames_per_s,
            latency_p50_ms=self.latency_p50_ms,
            latency_p99_ms=self.latency_p99_ms,
            class_histogram=self.class_histogram,
            spike_rates=self.spike_rates,
            shadow_frames=self.shadow_frames,
            shadow_agreements=self.shadow_agreements,
            related=self.related,
        )

    @classmethod
    def from_proto(cls, message: telemetry_pb2.TelemetryStats) -> TelemetryStats:
        return cls(
            key=message.key,
            batches=message.batches,
            frames=message.frames,
            events=message.events,
            predictions=message.predictions,
            errors=message.errors,
            error_kinds=dict(message.error_kinds),
            first_unix_ms=message.first_unix_ms,
            last_unix_ms=message.last_unix_ms,
            frames_per_s=message.frames_per_s,
            latency_p50_ms=message.latency_p50_ms,
            latency_p99_ms=message.latency_p99_ms,
            class_histogram=list(message.class_histogram),
            spike_rates=dict(sorted(message.spike_rates.items())),
            shadow_frames=message.shadow_frames,
            shadow_agreements=message.shadow_agreements,
            related=list(message.related),
        )


@dataclass
class TelemetrySummary:
    since_unix_ms: int
    until_unix_ms: int
    agents: list[TelemetryStats]
    programs: list[TelemetryStats]

    def to_dict(self) -> dict[str, Any]:
        return {
            "since_unix_ms": self.since_unix_ms,
            "until_unix_ms": self.until_unix_ms,
            "agents": [a.to_dict() for a in self.agents],
            "programs": [p.to_dict() for p in self.programs],
        }

    def to_proto(self) -> telemetry_pb2.TelemetrySummary:
        return telemetry_pb2.TelemetrySummary(
            since_unix_ms=self.since_unix_ms,
            until_unix_ms=self.until_unix_ms,
            agents=[a.to_proto() for a in self.agents],
            programs=[p.to_proto() for p in self.programs],
        )

    @classmethod
    def from_proto(cls, message: telemetry_pb2.TelemetrySummary) -> TelemetrySummary:
        return cls(
            since_unix_ms=message.since_unix_ms,
            until_unix_ms=message.until_unix_ms,
            agents=[TelemetryStats.from_proto(a) for a in message.agents],
            programs=[TelemetryStats.from_proto(p) for p in message.programs],
        )
