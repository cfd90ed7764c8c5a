"""Command line of spikefleet-agent: ``run`` the daemon, show the ``inventory``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path

import structlog

from spikefleet import logsetup
from spikefleet.errors import SpikefleetError
from spikefleet_agent import __version__


def _run(args: argparse.Namespace) -> int:
    from spikefleet_agent.config import load_config
    from spikefleet_agent.daemon import Agent

    agent = Agent(load_config(Path(args.config)))
    agent.start()
    log = structlog.get_logger("spikefleet_agent")
    log.info(
        "agent.listening",
        inference_port=agent.inference_port,
        metrics_port=agent.metrics_port,
    )

    def _stop(signum: int, frame: object) -> None:
        agent._stopped.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.wait()
    agent.stop()
    return 0


def _inventory(args: argparse.Namespace) -> int:
    from spikefleet_agent.device.inventory import scan

    found = scan(pci_root=Path(args.sysfs_pci))
    if args.json:
        json.dump([asdict(d) for d in found], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from spikefleet.cli.output import print_table

    print_table(
        "devices",
        ["kind", "bus", "vendor:product", "description", "address"],
        [
            (d.kind, d.bus, f"{d.vendor_id:04x}:{d.product_id:04x}", d.description, d.address)
            for d in found
        ],
    )
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from spikefleet.client.tls import use_tls
    from spikefleet.program.signing import TrustedKeys
    from spikefleet_agent.config import check_files, load_config

    config = load_config(Path(args.config))
    check_files(config)
    keys = TrustedKeys.load(*config.trusted_keys)
    print(f"{args.config}: ok ({config.backend} backend, {len(keys)} trusted key(s))")
    tls = config.server.tls()
    for address in config.server.addresses:
        if not use_tls(address, tls):
            how = "plaintext (loopback)" if tls is None else "plaintext (plaintext = true)"
        elif config.server.tls_cert:
            how = "mTLS"
        else:
            how = "TLS, " + (
                "CA " + config.server.tls_ca if config.server.tls_ca else "system roots"
            )
        print(f"  server {address}: {how}")
    inference = config.inference
    how = "mTLS" if inference.tls_client_ca else "TLS" if inference.tls_cert else "plaintext"
    token = "token" if inference.token_file else "no token"
    print(f"  inference API {inference.address}: {how}, {token}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikefleet-agent",
        description="spikefleet edge daemon: owns an Akida device, installs signed programs, "
        "serves streaming inference and reports telemetry.",
    )
    parser.add_argument("--version", action="version", version=f"spikefleet-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the agent until SIGTERM")
    run.add_argument("--config", required=True, metavar="PATH", help="agent TOML config")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--log-format",
        choices=logsetup.FORMATS,
        default="auto",
        help="json lines, or console text for people (auto: console on a terminal, else json)",
    )
    run.set_defaults(func=_run)
    inv = sub.add_parser("inventory", help="list Akida boards and event cameras on this host")
    inv.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inv.add_argument("--sysfs-pci", default="/sys/bus/pci/devices", help=argparse.SUPPRESS)
    inv.set_defaults(func=_inventory)
    check = sub.add_parser("check-config", help="validate a config and its trusted keys")
    check.add_argument("--config", required=True, metavar="PATH")
    check.set_defaults(func=_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    # logs on stderr, never stdout
    logsetup.configure(getattr(args, "log_level", "warning"), getattr(args, "log_format", "auto"))
    try:
        return int(args.func(args))
    except SpikefleetError as exc:
        print(f"spikefleet-agent {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
