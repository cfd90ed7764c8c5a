"""How the daemons (spikefleet-server, spikefleet-agent) write their logs.

JSON lines for log collectors, or a readable console format for a person at a
terminal; ``auto`` picks console when stderr is a terminal and JSON otherwise.
Records from the standard ``logging`` hierarchy (what the libraries use) go
through the same renderer, so one stream has one format. Libraries never call
this: only a program's entry point decides where logs go.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from typing import Any, TextIO

import structlog


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


FORMATS = [f.value for f in LogFormat]


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """Looked up per call, so a replaced ``sys.stderr`` (daemons, test capture) is honoured."""
    return structlog.PrintLogger(sys.stderr)


def resolve_format(fmt: str | LogFormat, stream: TextIO | None = None) -> LogFormat:
    chosen = LogFormat(fmt)
    if chosen is not LogFormat.AUTO:
        return chosen
    target = sys.stderr if stream is None else stream
    isatty = getattr(target, "isatty", None)
    return LogFormat.CONSOLE if callable(isatty) and isatty() else LogFormat.JSON


def configure(
    level: str = "info", fmt: str | LogFormat = LogFormat.JSON, *, context: bool = True
) -> LogFormat:
    """Send structlog and stdlib logging to stderr in ``fmt``; the format used."""
    chosen = resolve_format(fmt)
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if context:
        shared.insert(0, structlog.contextvars.merge_contextvars)
    renderer: Any
    if chosen is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
        final = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_colors())
        final = [renderer]
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    return chosen


def _colors() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(callable(isatty) and isatty())


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)
