"""Entry point of the ``spikefleet`` command.

Each area contributes one module with ``register(subparsers)``; a subcommand
sets ``func(args) -> int`` on its parser. Errors spikefleet raises on purpose
become one line on stderr and exit code 1; usage errors exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from spikefleet import __version__
from spikefleet.cli.advice import cli_advice
from spikefleet.errors import SpikefleetError

# Subcommand modules, in the order they appear in --help.
COMMAND_MODULES = [
    "spikefleet.cli.program_commands",
    "spikefleet.cli.engine_commands",
    "spikefleet.cli.convert_commands",
    "spikefleet.cli.server_commands",
    "spikefleet.cli.rollout_commands",
    "spikefleet.cli.agent_commands",
    "spikefleet.cli.telemetry_commands",
    "spikefleet.cli.data_commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikefleet",
        description="Deploy SNNTorch spiking networks to BrainChip Akida edge hardware.",
    )
    parser.add_argument("--version", action="version", version=f"spikefleet {__version__}")
    parser.add_argument("--server", metavar="ADDR", help="spikefleet-server address (host:port)")
    parser.add_argument("--token", metavar="TOKEN", help="bearer token for the server")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return int(func(args) or 0)
    except SpikefleetError as exc:
        print(f"spikefleet {args.command}: error: {cli_advice(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"spikefleet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
