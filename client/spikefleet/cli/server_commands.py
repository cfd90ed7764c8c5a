"""``spikefleet programs list|describe|get|keys|delete``: the server's program registry,
and the remote branch of ``spikefleet convert``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spikefleet.cli.advice import cli_advice
from spikefleet.cli.output import print_fields, print_json, print_table
from spikefleet.client.connect import client_from_args
from spikefleet.errors import SpikefleetError
from spikefleet.program.atomic import atomic_write

if TYPE_CHECKING:
    from spikefleet.events.spec import InputSpec


def _labels(pairs: list[str] | None) -> dict[str, str]:
    labels = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpikefleetError(f"label {pair!r} is not KEY=VALUE")
        labels[key] = value
    return labels


def _when(unix_ms: int) -> str:
    return datetime.fromtimestamp(unix_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _list(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        programs = client.programs.list(
            name=args.name, labels=_labels(args.label), latest_only=args.latest
        )
    if args.json:
        print_json([p.to_dict() for p in programs])
        return 0
    rows = [
        (
            p.name,
            p.version,
            p.sha256[:12],
            ",".join(f"{k}={v}" for k, v in sorted(p.labels.items())),
            p.size,
            _when(p.created_unix_ms),
        )
        for p in programs
    ]
    print_table(
        "programs",
        ["name", "version", "sha256", "labels", "bytes", "created"],
        rows,
        ids=("name", "sha256"),
    )
    return 0


def _describe(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        info = client.programs.describe(args.program, args.version)
    if args.json:
        print_json(info.to_dict())
        return 0
    rows: list[tuple[str, Any]] = [
        ("name", info.name),
        ("version", info.version),
        ("sha256", info.sha256),
        ("signed by", info.key_id),
        ("bytes", info.size),
        ("created", _when(info.created_unix_ms)),
        ("source sha256", info.source_sha256),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(info.labels.items())) or "-"),
        ("fidelity", json.dumps(info.fidelity, sort_keys=True) if info.fidelity else "-"),
    ]
    print_fields(rows)
    return 0


def _get(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        data = client.programs.get(args.program, args.version)
    atomic_write(args.output, data)
    print(f"wrote {args.output} ({len(data)} bytes, signed program)")
    return 0


def _delete(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        info = client.programs.delete(args.program, args.version)
    if args.json:
        print_json(info.to_dict())
    else:
        print(f"deleted {info.name} v{info.version} ({info.sha256})")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from spikefleet.program.signing import PUBLIC_SUFFIX, PublicKey

    with client_from_args(args) as client:
        keys = client.programs.trusted_keys()
    for key_id, pem in keys.items():
        if PublicKey.from_pem(pem).key_id != key_id:
            raise SpikefleetError(f"the server sent key {key_id} with a different key's PEM")
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        for key_id, pem in keys.items():
            atomic_write(args.output_dir / f"{key_id}{PUBLIC_SUFFIX}", pem)
    if args.json:
        print_json({key_id: pem.decode() for key_id, pem in keys.items()})
    else:
        where = f" -> {args.output_dir}" if args.output_dir is not None else ""
        for key_id in keys:
            print(f"{key_id}{where}")
    return 0


def register(subparsers: Any) -> None:
    programs = subparsers.add_parser(
        "programs",
        help="list, describe, fetch or delete programs on the server (needs --server)",
        description="The server's program registry (global --server ADDR and --token T).",
    )
    sub = programs.add_subparsers(dest="programs_command", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="stored programs, by name and version")
    listing.add_argument("--name", help="only this name")
    listing.add_argument("--label", action="append", metavar="KEY=VALUE", help="must match")
    listing.add_argument("--latest", action="store_true", help="only each name's latest version")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_list)

    def ref(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "program", help="name (latest version), name@version, or sha256 (or a unique prefix)"
        )
        parser.add_argument(
            "--version", type=int, help="with a name: this version (default latest)"
        )

    describe = sub.add_parser("describe", help="one program's record and fidelity report")
    ref(describe)
    describe.add_argument("--json", action="store_true", help="print JSON")
    describe.set_defaults(func=_describe)

    get = sub.add_parser("get", help="download a signed program")
    ref(get)
    get.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    get.set_defaults(func=_get)

    keys = sub.add_parser(
        "keys", help="the server's signing public keys (for agents' trusted keys)"
    )
    keys.add_argument("-o", "--output-dir", type=Path, help="write each key as DIR/<key id>.pub")
    keys.add_argument("--json", action="store_true", help="print JSON (key id -> PEM)")
    keys.set_defaults(func=_keys)

    delete = sub.add_parser("delete", help="delete a program no agent runs (admin)")
    ref(delete)
    delete.add_argument("--json", action="store_true", help="print JSON")
    delete.set_defaults(func=_delete)


def convert_remotely(args: argparse.Namespace) -> int:
    """``spikefleet --server ADDR convert ...``: upload, let the server convert, sign and
    store, then write the signed program it returns."""
    from spikefleet.cli.output import progress
    from spikefleet.client import ConvertProgress

    if args.sign_key:
        raise SpikefleetError("with --server the server signs the program: drop --sign-key")
    frames = labels = None
    if args.calib:
        from spikefleet.convert.calibration import load_calibration, load_labels

        frames, labels = load_calibration(
            args.calib, split=args.split, limit=args.limit, input_spec=_spec_of(args)
        )
        if args.labels:
            labels = load_labels(args.labels)
            if args.limit is not None:
                labels = labels[: args.limit]
    arch = args.arch
    if getattr(args, "readout", None):
        if not arch:
            raise SpikefleetError(
                "--readout with --server travels in the architecture string: give --arch, "
                "or choose the read-out at extract time (spikefleet.extract(..., readout=...))"
            )
        arch = f"{arch} Readout({args.readout})"
    shape = None
    if args.input_shape:
        try:
            h, w, c = (int(part) for part in args.input_shape.split(","))
        except ValueError:
            raise SpikefleetError(
                f"--input-shape {args.input_shape!r}: expected H,W,C such as 34,34,2"
            ) from None
        shape = (h, w, c)
    with client_from_args(args) as client, progress("uploading", total=1.0) as advance:
        shown = [0.0]

        def report(event: ConvertProgress) -> None:
            advance(event.fraction - shown[0], description=f"{event.stage}: {event.message}")
            shown[0] = event.fraction

        info = client.convert(
            args.model,
            name=args.name,
            arch=arch,
            weights_bits=args.bits,
            allow_beta=args.allow_beta,
            allow_shift=args.allow_shift,
            calibration=frames,
            calibration_labels=labels,
            input_shape=shape,
            input_scale=args.input_scale,
            clip=args.clip,
            hardware=not args.no_hardware,
            input_spec=_spec_of(args),
            on_progress=report,
        )
        data = client.programs.get(info.sha256)
    atomic_write(args.output, data)
    if args.json:
        print_json({"output": str(args.output), "bytes": len(data), **info.to_dict()})
        return 0
    rows: list[tuple[str, Any]] = [
        ("output", args.output),
        ("program", f"{info.name} v{info.version}"),
        ("sha256", info.sha256),
        ("signed by", info.key_id),
        ("size", f"{len(data)} bytes"),
    ]
    if "samples" in info.fidelity:
        from spikefleet.convert import FidelityReport

        rows.extend(FidelityReport.from_dict(info.fidelity).rows())
    print_table(f"converted {info.name} on {client.address}", ["measure", "value"], rows)
    for note in info.fidelity.get("notes", []):
        print(f"note: {cli_advice(note)}")
    return 0


def _spec_of(args: argparse.Namespace) -> InputSpec | None:
    """--input-spec, read once (calibration recordings are binned by it too)."""
    if not getattr(args, "input_spec", None):
        return None
    if not hasattr(args, "_input_spec"):
        from spikefleet.events.spec import load_input_spec

        args._input_spec = load_input_spec(args.input_spec)
    return args._input_spec
