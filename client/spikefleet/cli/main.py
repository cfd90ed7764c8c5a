"""Entry point of the ``spikefleet`` command: one subcommand module per area."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spikefleet", description=__doc__)
    parser.parse_args(argv)
    parser.print_help()
    return 0
