"""What agents reported, summed up by the server: ``Client.telemetry(...)``.

One :class:`TelemetryStats` per agent and per program over a time range: frames
and frames/s, latency (p50 and p99), errors by kind, predictions per class,
spike rates per layer and shadow agreement.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from spikefleet.errors import SpikefleetError
from spikefleet.v1 import telemetry_pb2

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


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

    @classmethod
    def from_proto(cls, message: telemetry_pb2.TelemetrySummary) -> TelemetrySummary:
        return cls(
            since_unix_ms=message.since_unix_ms,
            until_unix_ms=message.until_unix_ms,
            agents=[TelemetryStats.from_proto(a) for a in message.agents],
            programs=[TelemetryStats.from_proto(p) for p in message.programs],
        )


def parse_time(text: str, now: float | None = None) -> int:
    """``"15m"`` (ago), ``"2026-12-01T10:00:00Z"``/``"2026-12-01 10:00"`` (UTC unless an
    offset is given) or unix seconds -> unix ms."""
    now = time.time() if now is None else now
    match = _AGO.match(text)
    if match is not None:
        return int((now - float(match.group(1)) * _UNIT_S[match.group(2)]) * 1000)
    try:
        return int(float(text) * 1000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SpikefleetError(
            f"time {text!r} is not a duration ago (15m, 2h, 1d), an ISO time "
            "(2026-12-01T10:00:00Z) or unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
