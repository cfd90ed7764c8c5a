"""Entry point of the ``spikefleet`` command.

Each area contributes one module with ``register(subparsers)``; a subcommand
sets ``func(args) -> int`` on its parser. Errors spikefleet raises on purpose
become one line on stderr and exit code 1; usage errors exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

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


SECRET_OPTIONS = ("--token",)


def _secrets(argv: list[str]) -> list[str]:
    """The values given to secret options in ``argv`` (``--token X``, ``--token=X``)."""
    found = []
    for i, arg in enumerate(argv):
        for option in SECRET_OPTIONS:
            if arg == option and i + 1 < len(argv):
                found.append(argv[i + 1])
            elif arg.startswith(option + "="):
                found.append(arg[len(option) + 1 :])
    return [value for value in found if value]


class RedactingParser(argparse.ArgumentParser):
    """Usage errors repeat what was typed ("unrecognized arguments: --token abc"): a token
    must not reach terminals and CI logs that way, so its value is masked."""

    def error(self, message: str) -> NoReturn:
        for secret in _secrets(sys.argv[1:] if self._argv is None else self._argv):
            message = message.replace(secret, "***")
        super().error(message)

    _argv: list[str] | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = RedactingParser(
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
    RedactingParser._argv = None if argv is None else list(argv)
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
