"""Command line of spikefleet-agent."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spikefleet-agent",
        description="spikefleet edge daemon (device, programs, inference, telemetry).",
    )
    parser.parse_args(argv)
    parser.print_help()
    return 0
