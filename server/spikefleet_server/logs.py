"""structlog on stderr, with the per-call context (request id, method, caller): JSON
lines by default, a console format for a person (``spikefleet.logsetup``)."""

from __future__ import annotations

from spikefleet.logsetup import LogFormat
from spikefleet.logsetup import configure as _configure


def configure(level: str = "info", fmt: str | LogFormat = LogFormat.JSON) -> LogFormat:
    return _configure(level, fmt)
