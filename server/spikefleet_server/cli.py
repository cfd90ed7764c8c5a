"""Command line of spikefleet-server."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spikefleet-server",
        description="Central spikefleet service (conversion, registry, fleet).",
    )
    parser.parse_args(argv)
    parser.print_help()
    return 0
