"""``spikefleet agents`` and ``spikefleet rollout ...``: see and drive fleet rollouts."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from spikefleet.cli.output import print_json, print_table
from spikefleet.client.connect import client_from_args
from spikefleet.client.rollouts import (
    AgentSummary,
    RolloutRequest,
    RolloutsClient,
    parse_canary,
    parse_duration,
    parse_selector,
    parse_waves,
)
from spikefleet.errors import RolloutError
from spikefleet.wire.rollouts import Rollout

EVENTS_SHOWN = 6
ROLLOUT_ID_HELP = "rollout id (or a unique prefix of it)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agents = subparsers.add_parser(
        "agents",
        help="list the agents the server knows",
        description="Agents with their labels, backend, program, health and last contact.",
    )
    agents.add_argument(
        "--selector", action="append", default=[], metavar="K=V", help="only matching agents"
    )
    agents.add_argument("--json", action="store_true", help="print JSON")
    agents.set_defaults(func=_agents)
    agent_commands = agents.add_subparsers(dest="agents_command", metavar="COMMAND")
    delete = agent_commands.add_parser(
        "delete",
        help="forget an agent: record, desired program, installs and telemetry (admin)",
        description="Delete what the server holds about AGENT_ID (records an impersonator or "
        "a flood of made-up ids left, retired hosts). A connected agent is refused unless "
        "--force; it registers again while its token is valid, so revoke that first.",
    )
    delete.add_argument("agent_id", nargs="+", metavar="AGENT_ID")
    delete.add_argument("--force", action="store_true", help="also when connected")
    delete.add_argument("--json", action="store_true", help="print JSON")
    delete.set_defaults(func=_delete_agents)

    rollout = subparsers.add_parser(
        "rollout",
        help="roll a program out to agents: canary, waves, gates, rollback",
        description="Put a registry program on the agents a label selector picks: a canary "
        "first (with shadow evaluation when --min-agreement is given), then waves, each "
        "baking while health gates decide; a failed gate rolls every touched agent back.",
    )
    commands = rollout.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)

    create = commands.add_parser(
        "create",
        help="start a rollout",
        description="Start rolling PROGRAM (a registry name, name@version, sha256 or unique "
        "sha256 prefix) out.",
    )
    create.add_argument(
        "program",
        metavar="PROGRAM",
        help="name (latest version), name@version, or sha256 (or a unique prefix)",
    )
    create.add_argument(
        "--selector",
        action="append",
        default=[],
        metavar="K=V",
        help="target agents whose labels match (repeat or comma-join; default: all agents)",
    )
    create.add_argument("--canary", default="0", help="canary size: agents (3) or percent (10%%)")
    create.add_argument(
        "--waves", help="cumulative percentages after the canary (50%%,100%%; default: 100%%)"
    )
    create.add_argument("--bake", help="bake time per phase (30s, 5m; default: 30s)")
    create.add_argument(
        "--min-agreement",
        type=float,
        metavar="F",
        help="shadow-evaluate on the canary; minimum top-1 agreement (0..1)",
    )
    create.add_argument(
        "--min-shadow-frames",
        type=int,
        metavar="N",
        help="shadow frames needed before agreement can pass (default: 1)",
    )
    create.add_argument("--max-error-rate", type=float, metavar="F", help="0..1")
    create.add_argument("--max-p99-ms", type=float, metavar="MS", help="p99 latency")
    create.add_argument("--install-timeout", help="per-agent install wait (2m; default: 2m)")
    create.add_argument("--max-failed-installs", type=int, metavar="N")
    create.add_argument("--watch", action="store_true", help="follow it until it finishes")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(func=_create)

    status = commands.add_parser(
        "status",
        help="show one rollout, or list them",
        description="With ROLLOUT_ID: its phases, agents, gates and events; without: all rollouts.",
    )
    status.add_argument("rollout_id", nargs="?", metavar="ROLLOUT_ID", help=ROLLOUT_ID_HELP)
    status.add_argument("--active", action="store_true", help="only rollouts still in progress")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    watch = commands.add_parser(
        "watch",
        help="follow a rollout live until it finishes",
        description="A live display of the rollout; exits 0 when it succeeds, 1 when it ends "
        "any other way. With --json, one JSON object per change.",
    )
    watch.add_argument("rollout_id", metavar="ROLLOUT_ID", help=ROLLOUT_ID_HELP)
    watch.add_argument("--json", action="store_true", help="print JSON lines")
    watch.set_defaults(func=_watch)

    for name, text in (
        ("pause", "pause a running rollout (its bake restarts on resume)"),
        ("resume", "resume a paused rollout"),
        ("abort", "stop a rollout where it is; agents keep what they run"),
        ("rollback", "put every agent the rollout touched back on its previous program"),
    ):
        action = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument("rollout_id", metavar="ROLLOUT_ID", help=ROLLOUT_ID_HELP)
        if name != "resume":
            action.add_argument("--reason", default="", help="recorded in the rollout's events")
        action.add_argument("--json", action="store_true", help="print JSON")
        action.set_defaults(func=_action, action=name)


def _client(args: argparse.Namespace) -> RolloutsClient:
    return client_from_args(args).rollouts


# -- agents ---------------------------------------------------------------------------------


def _agents(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        agents = client.agents(parse_selector(args.selector))
    if args.json:
        print_json([a.to_dict() for a in agents])
        return 0
    print_table(
        f"{len(agents)} agents",
        ["agent", "labels", "backend", "program", "shadow", "health", "connected", "last seen"],
        [_agent_row(a) for a in agents],
        ids=("agent", "program", "shadow"),
    )
    return 0


def _delete_agents(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        deleted = [asdict(client.delete_agent(a, force=args.force)) for a in args.agent_id]
    if args.json:
        print_json(deleted)
    else:
        print_table(
            f"{len(deleted)} agents deleted",
            ["agent", "was connected", "telemetry batches", "installs"],
            [
                [
                    d["agent_id"],
                    str(d["was_connected"]),
                    str(d["telemetry_batches"]),
                    str(d["installs"]),
                ]
                for d in deleted
            ],
        )
    return 0


def _agent_row(agent: AgentSummary) -> list[str]:
    return [
        agent.agent_id,
        ",".join(f"{k}={v}" for k, v in sorted(agent.labels.items())),
        agent.backend,
        agent.program_sha256[:12] or "-",
        agent.shadow_sha256[:12] or "-",
        agent.health or "-",
        "yes" if agent.connected else "no",
        _ago(agent.last_seen_unix_ms),
    ]


# -- rollouts -------------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    canary_count, canary_percent = parse_canary(args.canary)
    whole = client_from_args(args)
    program = whole.programs.resolve(args.program)
    request = RolloutRequest(
        program_sha256=program.sha256,
        selector=parse_selector(args.selector),
        canary_count=canary_count,
        canary_percent=canary_percent,
        waves=parse_waves(args.waves) if args.waves is not None else None,
        bake_s=parse_duration(args.bake) if args.bake is not None else None,
        max_error_rate=args.max_error_rate,
        max_p99_ms=args.max_p99_ms,
        min_agreement=args.min_agreement,
        min_shadow_frames=args.min_shadow_frames,
        install_timeout_s=(
            parse_duration(args.install_timeout) if args.install_timeout is not None else None
        ),
        max_failed_installs=args.max_failed_installs,
    )
    client = whole.rollouts
    rollout = client.create(request)
    if args.watch:
        return _follow(client, rollout.rollout_id, args.json)
    if args.json:
        print_json(rollout.to_dict())
    else:
        print(f"rollout {rollout.rollout_id} started: {_headline(rollout)}")
        print(f"follow it with: spikefleet rollout watch {rollout.rollout_id}")
    return 0


def _status(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.rollout_id:
        rollout = client.get(args.rollout_id)
        if args.json:
            print_json(rollout.to_dict())
        else:
            Console().print(_render(rollout))
        return 0
    rollouts = client.list(active_only=args.active)
    if args.json:
        print_json([r.to_dict() for r in rollouts])
        return 0
    print_table(
        f"{len(rollouts)} rollouts",
        ["rollout", "program", "state", "phase", "agents", "created", "reason"],
        [
            [
                r.rollout_id,
                r.spec.program_sha256[:12],
                r.state,
                f"{r.phase_name(r.phase)} ({r.phase + 1}/{r.phases})",
                _count_text(r.counts()),
                _ago(r.created_unix_ms),
                r.reason,
            ]
            for r in rollouts
        ],
        ids=("rollout", "program", "state"),
    )
    return 0


def _watch(args: argparse.Namespace) -> int:
    return _follow(_client(args), args.rollout_id, args.json)


def _action(args: argparse.Namespace) -> int:
    client = _client(args)
    reason = getattr(args, "reason", "")
    if args.action == "pause":
        rollout = client.pause(args.rollout_id, reason)
    elif args.action == "resume":
        rollout = client.resume(args.rollout_id)
    elif args.action == "abort":
        rollout = client.abort(args.rollout_id, reason)
    else:
        rollout = client.rollback(args.rollout_id, reason)
    if args.json:
        print_json(rollout.to_dict())
    else:
        print(f"rollout {rollout.rollout_id}: {_headline(rollout)}")
    return 0


def _follow(client: RolloutsClient, rollout_id: str, as_json: bool) -> int:
    """Follow until final; exit 0 only when the rollout succeeded."""
    last: Rollout | None = None
    if as_json:
        for last in client.watch(rollout_id):
            print(json.dumps(last.to_dict(), sort_keys=True), flush=True)
    else:
        console = Console(stderr=True)
        if console.is_terminal:
            with Live(console=console, refresh_per_second=4, transient=False) as live:
                for last in client.watch(rollout_id):
                    live.update(_render(last))
        else:  # a log, not a screen: one line per rollout event, then the summary
            shown: set[tuple[int, str]] = set()
            for last in client.watch(rollout_id):
                for event in last.events:
                    if event not in shown:
                        shown.add(event)
                        console.print(f"{_clock(event[0])} {event[1]}", highlight=False)
            if last is not None:
                console.print(_render(last))
    if last is None:
        raise RolloutError(f"the server sent nothing about rollout {rollout_id}")
    rollout_id = last.rollout_id
    if last.state == "succeeded":
        if not as_json:
            print(f"rollout {rollout_id} succeeded: {last.reason}")
        return 0
    if not last.final:
        raise RolloutError(f"lost the watch on rollout {rollout_id} while it was {last.state}")
    raise RolloutError(f"rollout {rollout_id} {last.state}: {last.reason}")


# -- display --------------------------------------------------------------------------------


def _headline(rollout: Rollout) -> str:
    text = f"{rollout.state}, program {rollout.spec.program_sha256[:12]}"
    if rollout.state in ("running", "paused"):
        text += f", {rollout.phase_name(rollout.phase)} {rollout.stage}"
    if rollout.reason:
        text += f" ({rollout.reason})"
    return text


def _render(rollout: Rollout) -> Group:
    spec = rollout.spec
    header = Text()
    header.append(f"rollout {rollout.rollout_id}  ", style="bold")
    header.append(f"program {spec.program_sha256[:12]}  ")
    header.append(rollout.state, style=_state_style(rollout.state))
    if rollout.state in ("running", "paused"):
        elapsed = max(0.0, time.time() - rollout.stage_started_unix_ms / 1000)
        header.append(
            f"  {rollout.phase_name(rollout.phase)}: {rollout.stage}"
            + (
                f" {min(elapsed, spec.bake_s):.0f}/{spec.bake_s:g}s"
                if rollout.stage != "install"
                else ""
            )
        )
    if rollout.reason:
        header.append(f"\n{rollout.reason}")

    phases = Table(box=None, pad_edge=False)
    for column in ("phase", "agents", "progress", "status"):
        phases.add_column(column)
    for phase in range(rollout.phases):
        counts = rollout.counts(phase)
        total = sum(counts.values())
        done = counts.get("installed", 0) + counts.get("rolled-back", 0)
        phases.add_row(
            rollout.phase_name(phase) + (" <" if phase == rollout.phase else ""),
            str(total),
            ProgressBar(total=max(total, 1), completed=done, width=30),
            _count_text(counts),
        )
    parts: list[Any] = [header, phases]
    if rollout.gates:
        gates = Table(box=None, pad_edge=False)
        for column in ("gate", "value", "limit", "", "detail"):
            gates.add_column(column)
        for gate in rollout.gates:
            gates.add_row(
                gate.name,
                f"{gate.value:.4g}",
                f"{gate.threshold:g}",
                Text("pass", style="green") if gate.passed else Text("FAIL", style="bold red"),
                gate.detail,
            )
        parts.append(gates)
    for unix_ms, message in rollout.events[-EVENTS_SHOWN:]:
        parts.append(Text(f"{_clock(unix_ms)} {message}"))
    return Group(*parts)


def _state_style(state: str) -> str:
    return {
        "succeeded": "bold green",
        "running": "cyan",
        "paused": "yellow",
        "rolling-back": "bold red",
        "rolled-back": "red",
        "aborted": "yellow",
    }.get(state, "")


def _count_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "-"


def _clock(unix_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(unix_ms / 1000))


def _ago(unix_ms: int) -> str:
    if not unix_ms:
        return "never"
    seconds = max(0.0, time.time() - unix_ms / 1000)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"
