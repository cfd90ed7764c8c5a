"""Command line of spikefleet-server: ``serve``, ``check-config``, ``db upgrade``,
``token create`` and ``keys`` (rotation)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from spikefleet.errors import SpikefleetError
from spikefleet.logsetup import FORMATS
from spikefleet.secret_files import write_secret
from spikefleet_server import __version__
from spikefleet_server.auth import Role
from spikefleet_server.config import hash_token, load_config


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config values ``serve``'s flags (shared by ``check-config``) set."""
    overrides: dict[str, Any] = {
        "listen": args.listen,
        "data_dir": args.data_dir,
        "metrics_listen": args.metrics_listen,
        "signing_key": args.signing_key,
        "max_upload_bytes": args.max_upload_bytes,
        "workers": args.workers,
        "listeners": args.listeners,
        "log_level": args.log_level,
    }
    if args.insecure_loopback:
        overrides["insecure_loopback"] = True
    if args.no_db_upgrade:
        overrides["db_upgrade"] = False
    tls = {
        k: v
        for k, v in (("cert", args.tls_cert), ("key", args.tls_key), ("client_ca", args.client_ca))
        if v
    }
    if tls:
        overrides["tls"] = tls
    if args.database:
        overrides["database"] = {"url": args.database}
    return overrides


GC_THRESHOLDS = (20_000, 50, 20)
"""The serving process's collector thresholds (Python's default: 700, 10, 10)."""


def _tune_gc() -> None:
    """Keep the cyclic collector's full passes off the serving path.

    A fleet keeps thousands of objects alive for seconds each (every stream's pending
    read, its session, its queued acks), so with the default thresholds they reached
    the oldest generation and the collector walked the whole heap every few seconds:
    at 2,000 agents a full pass cost 0.3-0.6 s of CPU every 2-5 s, holding the GIL
    (the event loop stood still meanwhile). What starting made lives as long as the
    process and is frozen out of the passes; younger objects get room to die first (a
    young pass every 20,000 allocations, a middle one every 50 of those, a full one
    at most every 20 middle ones, when enough reached the old generation). Reference
    counting frees non-cyclic garbage at once, as before; cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _serve(args: argparse.Namespace) -> int:
    from spikefleet_server import logs
    from spikefleet_server.app import ServerApp

    config = load_config(args.config, overrides=_overrides(args))
    logs.configure(config.log_level, args.log_format)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        app = ServerApp(config)
        port = await app.start()
        _tune_gc()
        print(f"spikefleet-server listening on port {port}", file=sys.stderr, flush=True)
        await stop.wait()
        await app.stop(grace=config.drain_seconds)

    asyncio.run(serve())
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from spikefleet.program.signing import SigningKey

    config = load_config(args.config, overrides=_overrides(args))
    key = config.signing_key_path
    key_id = SigningKey.load(key).key_id if key.exists() else "(created on first start)"
    tls = "mTLS" if config.tls.client_ca else "TLS" if config.tls.cert else "plaintext (loopback)"
    print(
        f"config ok: listen {config.listen} ({tls}), data dir {config.data_dir}, "
        f"{len(config.tokens)} token(s), signing key {key_id}"
    )
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from spikefleet_server.storage import Database, upgrade

    overrides: dict[str, Any] = {"data_dir": args.data_dir}
    if args.database:
        overrides["database"] = {"url": args.database}
    config = load_config(args.config, overrides=overrides, check=False)
    db = Database(config.database_target)
    try:
        before, after = upgrade(db)
    finally:
        db.close()
    change = "already current" if before == after else f"upgraded from {before or 'none'}"
    print(f"database {db.describe()}: schema {after} ({change})")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    token = secrets.token_urlsafe(32)
    role = Role.parse(args.role)
    if args.agent and role is not Role.AGENT:
        print(f"error: --agent applies to role agent only, not {role.value}", file=sys.stderr)
        return 2
    if args.output is not None:
        if args.output.exists() and not args.force:
            print(
                f"error: {args.output} exists; choose another -o or pass --force", file=sys.stderr
            )
            return 2
        write_secret(args.output, (token + "\n").encode())  # mode 0600 from the first byte
        print(f"# token written to {args.output} (mode 0600)", file=sys.stderr)
    else:
        print(token)
    entry = (
        f'\n# add to the server config:\n[[tokens]]\nname = "{args.name}"\n'
        f'role = "{role.value}"\nsha256 = "{hash_token(token)}"'
    )
    if args.agent:
        entry += "\nagents = [" + ", ".join(f'"{agent}"' for agent in args.agent) + "]"
    elif role is Role.AGENT:
        entry += "\n# agents = [...]  binds this token to the agent ids it may register as"
    print(entry, file=sys.stderr)
    return 0


def _config_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that override config values, for ``serve`` and ``check-config`` alike."""
    parser.add_argument("--config", type=Path, help="TOML config file")
    parser.add_argument("--data-dir", type=Path, help="where the database, programs and keys live")
    parser.add_argument(
        "--database",
        metavar="URL",
        help="postgresql://USER:PASSWORD@HOST:PORT/DB, shared by replicas "
        "(default: SQLite in the data dir; also [database] url, SPIKEFLEET_DATABASE_URL)",
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="gRPC address (port 0: any free)")
    parser.add_argument(
        "--listeners",
        type=int,
        metavar="N",
        help="gRPC servers sharing the listen address in this process (SO_REUSEPORT, Linux): "
        "each takes up new calls on its own, so a reconnect storm is taken up faster "
        "(listeners, SPIKEFLEET_SERVER_LISTENERS)",
    )
    parser.add_argument("--metrics-listen", metavar="HOST:PORT", help="Prometheus /metrics address")
    parser.add_argument(
        "--signing-key",
        type=Path,
        help="Ed25519 key (default: DATA_DIR/keys/signing.key, created on first start)",
    )
    parser.add_argument("--tls-cert", type=Path, help="server certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    parser.add_argument(
        "--client-ca", type=Path, help="require client certificates signed by this CA (mTLS)"
    )
    parser.add_argument(
        "--insecure-loopback",
        action="store_true",
        help="serve plaintext; only allowed on a loopback address (development, tests)",
    )
    parser.add_argument("--max-upload-bytes", type=int, help="largest model upload accepted")
    parser.add_argument("--workers", type=int, help="conversion worker processes")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--no-db-upgrade",
        action="store_true",
        help="do not migrate the database schema at start; refuse one that is not current",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikefleet-server",
        description="Central spikefleet service: conversion, signed program registry, fleet.",
    )
    parser.add_argument("--version", action="version", version=f"spikefleet-server {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server until SIGTERM (then drain and exit)")
    _config_flags(serve)
    serve.add_argument(
        "--log-format",
        choices=FORMATS,
        default="auto",
        help="json lines, or console text for people (auto: console on a terminal, else json)",
    )
    serve.set_defaults(func=_serve)

    db = sub.add_parser("db", help="the database's schema")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_upgrade = db_sub.add_parser(
        "upgrade", help="migrate the schema to this release's, keeping every row"
    )
    db_upgrade.add_argument("--config", type=Path, help="TOML config file")
    db_upgrade.add_argument("--data-dir", type=Path, help="where the database lives")
    db_upgrade.add_argument("--database", metavar="URL", help="a PostgreSQL URL instead")
    db_upgrade.set_defaults(func=_db_upgrade)

    check = sub.add_parser(
        "check-config",
        help="validate the configuration serve would use (same flags), then exit",
    )
    _config_flags(check)
    check.set_defaults(func=_check_config)

    token = sub.add_parser("token", help="manage bearer tokens")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_sub.add_parser(
        "create", help="print a new token (stdout) and its config entry (stderr)"
    )
    create.add_argument("--name", required=True, help="who the token is for")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="ID",
        help="agent tokens: an agent id (or shell pattern) the token may register as; repeatable",
    )
    create.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write the token to FILE (mode 0600) instead of stdout",
    )
    create.add_argument("--force", action="store_true", help="replace an existing FILE")
    create.set_defaults(func=_token_create)

    keys = sub.add_parser("keys", help="signing keys: make one, endorse it for rotation")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = keys_sub.add_parser(
        "generate", help="write a new signing key (0600) and its .pub; print its key id"
    )
    generate.add_argument("path", type=Path, help="where the private key goes")
    generate.set_defaults(func=_keys_generate)
    endorse = keys_sub.add_parser(
        "endorse",
        help="vouch for a new key with the current one, into trusted_keys_dir "
        "(agents that trust the current key learn the new one)",
    )
    endorse.add_argument("key", type=Path, help="the new key (.pub, or its private key file)")
    endorse.add_argument("--by", type=Path, required=True, help="the current signing key")
    endorse.add_argument("--out", type=Path, required=True, help="the replicas' trusted_keys_dir")
    endorse.set_defaults(func=_keys_endorse)
    return parser


def _keys_generate(args: argparse.Namespace) -> int:
    from spikefleet.program.signing import SigningKey

    path: Path = args.path
    if path.exists():
        print(f"error: {path} exists; a signing key is never overwritten", file=sys.stderr)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = SigningKey.generate()
    key.save(path)
    key.public_key.save(path.with_suffix(".pub"))
    print(key.key_id)
    return 0


def _keys_endorse(args: argparse.Namespace) -> int:
    from spikefleet.errors import KeyFileError
    from spikefleet.program.signing import PublicKey, SigningKey
    from spikefleet_server.keys import endorse

    try:
        key = PublicKey.load(args.key)
    except KeyFileError:  # a private key file: endorse its public half
        key = SigningKey.load(args.key).public_key
    path = endorse(key, SigningKey.load(args.by), args.out)
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return int(func(args))
    except SpikefleetError as exc:
        print(f"spikefleet-server {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
