"""What agents reported, summed up by the server: ``Client.telemetry(...)``.

One :class:`TelemetryStats` per agent and per program over a time range: frames
and frames/s, latency (p50 and p99), errors by kind, predictions per class,
spike rates per layer and shadow agreement.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from spikefleet.errors import SpikefleetError
from spikefleet.wire.telemetry import TelemetryStats, TelemetrySummary

__all__ = ["TelemetryStats", "TelemetrySummary", "parse_time", "unix_ms"]

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def unix_ms(value: int | str | None) -> int:
    """A query bound: unix ms as given, text as :func:`parse_time` reads it, None: 0."""
    if value is None:
        return 0
    return parse_time(value) if isinstance(value, str) else int(value)


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
