"""``spikefleet agent status | assign``: look at one agent, assign a program directly."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path

import grpc

from spikefleet.cli.output import print_json, print_table
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
    assign.add_argument("agent_id")
    assign.add_argument("sha256", nargs="?", default="", help="program sha256 in the registry")
    assign.add_argument("--shadow", default="", metavar="SHA256", help="candidate run in shadow")
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
        print_table(f"agent {status.agent_id}", ["field", "value"], list(data.items()))
    return 0


def _assign(args: argparse.Namespace) -> int:
    from spikefleet.client.connect import client_from_args
    from spikefleet.client.errors import from_rpc_error
    from spikefleet.v1 import fleet_pb2, fleet_pb2_grpc

    if not args.sha256 and not args.rollback:
        raise SpikefleetError("give the program's sha256, or --rollback")
    token = getattr(args, "token", None) or os.environ.get("SPIKEFLEET_TOKEN")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with client_from_args(args) as client:
        stub = fleet_pb2_grpc.FleetAdminStub(client.channel)
        try:
            reply = stub.Assign(
                fleet_pb2.AssignRequest(
                    agent_id=args.agent_id,
                    sha256=args.sha256,
                    shadow_sha256=args.shadow,
                    rollback=args.rollback,
                ),
                metadata=metadata,
                timeout=30,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, client.address) from None
    result = {
        "agent_id": args.agent_id,
        "sha256": args.sha256,
        "generation": reply.generation,
        "delivered": "now" if reply.connected else "when the agent connects",
    }
    if args.json:
        print_json(result)
    else:
        print_table("assignment", ["field", "value"], list(result.items()))
    return 0
