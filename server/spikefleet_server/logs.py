"""structlog on stderr, with the per-call context (request id, method, caller): JSON
lines by default, a console format for a person (``spikefleet.logsetup``)."""

from __future__ import annotations

import logging

from spikefleet.logsetup import LogFormat
from spikefleet.logsetup import configure as _configure

QUIET_LIBRARIES = ("alembic",)
"""Loggers held at WARNING: Alembic's INFO lines narrate every schema check at start
(the server logs ``app.schema_upgraded`` itself when a migration ran)."""


def configure(level: str = "info", fmt: str | LogFormat = LogFormat.JSON) -> LogFormat:
    chosen = _configure(level, fmt)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    return chosen
