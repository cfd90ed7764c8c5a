"""``spikefleet agent status | assign``: look at one agent, assign a program directly."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from spikefleet.cli.output import print_fields, print_json
from spikefleet.errors import SpikefleetError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = subparsers.add_parser(
        "agent",
        help="one edge agent: its status, or a direct program assignment",
        description="Talk to one spikefleet-agent (status) or assign it a program through "
        "the server (admin; rollouts are the safe way for fleets).",
    )
    commands = agent.add_subparsers(dest="agent_command", metavar="ACTION", required=True)

    status = commands.add_parser(
        "status",
        help="what an agent runs (its local inference API)",
        description="Ask an agent's inference API what it runs, whether it reaches the "
        "server and how much telemetry waits in its spool.",
    )
    status.add_argument("address", help="agent inference address (host:port or unix:///path)")
    status.add_argument("--token-file", metavar="PATH", help="the agent's inference token")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    assign = commands.add_parser(
        "assign",
        help="make a program the desired one for an agent (admin)",
        description="Set the desired program of one agent, bypassing rollout gates. Needs "
        "--server and an admin token (--token or SPIKEFLEET_TOKEN).",
    )
    assign.add_argument("agent_id", metavar="AGENT", help="agent id (or a unique prefix)")
    assign.add_argument(
        "program",
        nargs="?",
        default="",
        metavar="PROGRAM",
        help="registry program: name, name@version, or sha256 (or a unique prefix)",
    )
    assign.add_argument(
        "--shadow", default="", metavar="PROGRAM", help="candidate run in shadow (same forms)"
    )
    assign.add_argument("--rollback", action="store_true", help="go back to the previous slot")
    assign.add_argument("--json", action="store_true", help="print JSON")
    assign.set_defaults(func=_assign)


def _status(args: argparse.Namespace) -> int:
    from spikefleet.client.agent import AgentClient

    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise SpikefleetError(f"cannot read {args.token_file}: {exc.strerror}") from None
    with AgentClient(args.address, token=token, timeout=10) as client:
        status = client.status()
    data = asdict(status)
    if args.json:
        print_json(data)
    else:
        print_fields(list(data.items()))
    return 0


def _assign(args: argparse.Namespace) -> int:
    from spikefleet.client.connect import client_from_args

    if not args.program and not args.rollback:
        raise SpikefleetError(
            "give the program (name, name@version or sha256 prefix), or --rollback"
        )
    with client_from_args(args) as client:
        done = client.assign(
            args.agent_id, args.program, shadow=args.shadow, rollback=args.rollback
        )
    result = {
        "agent_id": done.agent_id,
        "sha256": done.sha256,
        "shadow_sha256": done.shadow_sha256,
        "generation": done.generation,
        "delivered": "now" if done.connected else "when the agent connects",
    }
    if args.json:
        print_json(result)
    else:
        print_fields([(k, v or "-") for k, v in result.items()])
    return 0
