"""``spikefleet telemetry``: what agents report, per agent and per program, over a time range."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from spikefleet.cli.output import print_json
from spikefleet.client.client import Client
from spikefleet.client.connect import client_from_args
from spikefleet.client.rollouts import parse_duration
from spikefleet.client.telemetry import TelemetryStats, TelemetrySummary
from spikefleet.errors import SpikefleetError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    telemetry = subparsers.add_parser(
        "telemetry",
        help="what agents report: frames/s, latency, errors, classes, spike rates, shadow",
        description="Telemetry the server stored, summed up per agent and per program over a "
        "time range: frames and frames/s, latency p50/p99, errors by kind, predictions per "
        "class, spike rates per layer and shadow agreement. Needs --server.",
    )
    telemetry.add_argument(
        "--agent", action="append", default=[], metavar="ID", help="only this agent (id or prefix)"
    )
    telemetry.add_argument(
        "--program",
        action="append",
        default=[],
        metavar="PROGRAM",
        help="only periods running it: name, name@version, or sha256 (or a unique prefix)",
    )
    telemetry.add_argument(
        "--since",
        default="1h",
        metavar="WHEN",
        help="periods ending after this: ago (15m, 2h, 1d), an ISO time or 'all' (1h)",
    )
    telemetry.add_argument("--until", metavar="WHEN", help="periods ending before this (now)")
    telemetry.add_argument(
        "--by",
        choices=("agent", "program", "both"),
        default="both",
        help="group per agent, per program, or both (both)",
    )
    telemetry.add_argument("--json", action="store_true", help="print JSON (one line per refresh)")
    telemetry.add_argument(
        "--watch", action="store_true", help="redraw every --interval until interrupted"
    )
    telemetry.add_argument("--interval", default="5s", help="refresh period with --watch (5s)")
    telemetry.add_argument(
        "--count", type=int, metavar="N", help="with --watch: stop after N refreshes"
    )
    telemetry.set_defaults(func=_telemetry)


def _telemetry(args: argparse.Namespace) -> int:
    interval = parse_duration(args.interval)
    if args.watch and interval <= 0:
        raise SpikefleetError("--interval must be above 0 (e.g. 5s)")
    if args.count is not None and args.count < 1:
        raise SpikefleetError("--count must be 1 or more")
    since = None if args.since == "all" else args.since
    with client_from_args(args) as client:
        names = _program_names(client)

        def fetch() -> TelemetrySummary:
            return client.telemetry(
                since=since, until=args.until, agents=args.agent, programs=args.program
            )

        if not args.watch:
            _show(fetch(), names, args, Console())
            return 0
        refreshes = 0
        console = Console()
        live = console.is_terminal and not args.json
        with Live(console=console, auto_refresh=False) if live else _Nothing() as screen:
            while args.count is None or refreshes < args.count:
                if refreshes:
                    time.sleep(interval)
                summary = fetch()
                refreshes += 1
                if screen is not None:
                    screen.update(Group(*_renderables(summary, names, args.by)), refresh=True)
                else:
                    if refreshes > 1 and not args.json:
                        print()
                    _show(summary, names, args, console)
    return 0


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _program_names(client: Client) -> dict[str, str]:
    """sha256 -> name@version, for the tables."""
    return {p.sha256: f"{p.name}@{p.version}" for p in client.programs.list()}


def _show(summary: TelemetrySummary, names: dict[str, str], args: Any, console: Console) -> None:
    if args.json:
        data = summary.to_dict()
        for entry in data["programs"]:
            entry["program"] = names.get(entry["key"], "")
        if args.watch:
            print(json.dumps(data, sort_keys=True), flush=True)
        else:
            print_json(data)
        return
    for part in _renderables(summary, names, args.by):
        console.print(part)


def _range_text(summary: TelemetrySummary) -> str:
    def clock(ms: int) -> str:
        return time.strftime("%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "start"

    return f"{clock(summary.since_unix_ms)} to {clock(summary.until_unix_ms)}"


def _renderables(summary: TelemetrySummary, names: dict[str, str], by: str) -> list[Any]:
    """Tables whose identifier column is never cut: at 80 columns the numbers fold first."""

    def program(sha: str) -> str:
        return names.get(sha, sha[:12])

    parts: list[Any] = []
    span = _range_text(summary)
    if by in ("agent", "both"):
        parts.append(_table(f"per agent, {span}, latency in ms", "agent", summary.agents, str))
        parts.append(
            _details(
                "agent",
                summary.agents,
                lambda s: s.key,
                ("programs", lambda s: " ".join(program(p) for p in s.related) or "-"),
            )
        )
    if by in ("program", "both"):
        parts.append(
            _table(f"per program, {span}, latency in ms", "program", summary.programs, program)
        )
        parts.append(
            _details(
                "program",
                summary.programs,
                lambda s: program(s.key),
                ("agents", lambda s: str(len(s.related))),
            )
        )
    if not summary.agents and not summary.programs:
        parts.append("no telemetry in this range (widen it with --since, e.g. --since 1d)")
    return parts


def _table(title: str, what: str, rows: list[TelemetryStats], label: Any) -> Table:
    table = Table(title=title)
    table.add_column(what, no_wrap=True, overflow="ignore")
    for column in ("frames", "frames/s", "p50", "p99", "errors", "shadow"):
        table.add_column(column, justify="right", overflow="fold")
    for stats in rows:
        agreement = stats.shadow_agreement
        table.add_row(
            label(stats.key),
            str(stats.frames),
            f"{stats.frames_per_s:.1f}",
            f"{stats.latency_p50_ms:.2f}",
            f"{stats.latency_p99_ms:.2f}",
            str(stats.errors),
            "-" if agreement is None else f"{100 * agreement:.1f}%",
        )
    return table


def _details(what: str, rows: list[TelemetryStats], label: Any, extra: tuple[str, Any]) -> Table:
    """Per agent or program: predictions per class, spike rates per layer, errors by kind."""
    table = Table(title=f"per {what}: classes, spike rates per layer, errors")
    table.add_column(what, no_wrap=True, overflow="ignore")
    table.add_column(extra[0], overflow="fold")
    table.add_column("predictions per class", overflow="fold")
    table.add_column("spike rates", overflow="fold")
    table.add_column("errors by kind", overflow="fold")
    for stats in rows:
        classes = " ".join(f"{i}:{n}" for i, n in enumerate(stats.class_histogram) if n)
        rates = " ".join(f"{layer}={rate:.3g}" for layer, rate in stats.spike_rates.items())
        kinds = " ".join(f"{kind}={n}" for kind, n in sorted(stats.error_kinds.items()))
        table.add_row(label(stats), extra[1](stats), classes or "-", rates or "-", kinds or "-")
    return table
