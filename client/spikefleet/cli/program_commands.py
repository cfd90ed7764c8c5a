"""``spikefleet keygen | sign | verify | inspect``: program keys, signatures and contents."""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path
from typing import Any

from spikefleet.cli.output import print_json, print_table
from spikefleet.errors import KeyFileError, ProgramFormatError, SignatureError
from spikefleet.program import codec
from spikefleet.program.files import read_bytes, save_program
from spikefleet.program.model import Convolutional, FullyConnected, InputData, Program
from spikefleet.program.packing import packed_size
from spikefleet.program.signing import (
    PUBLIC_SUFFIX,
    SignedProgram,
    SigningKey,
    TrustedKeys,
    is_signed,
    sign,
    verify,
)
from spikefleet.program.validate import validate


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keygen = subparsers.add_parser(
        "keygen",
        help="create an Ed25519 program-signing key pair",
        description="Write a private key KEY (PEM, mode 0600) and its public key KEY.pub; "
        "print the key id.",
    )
    keygen.add_argument("-o", "--output", required=True, metavar="KEY", help="private key path")
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")
    keygen.add_argument("--json", action="store_true", help="print JSON")
    keygen.set_defaults(func=_keygen)

    sign_cmd = subparsers.add_parser(
        "sign",
        help="sign a program with a private key",
        description="Wrap PROGRAM in a signed envelope that agents verify before loading.",
    )
    sign_cmd.add_argument("program", metavar="PROGRAM", help="plain program file")
    sign_cmd.add_argument("--key", required=True, metavar="KEY", help="private key (keygen)")
    sign_cmd.add_argument("-o", "--output", required=True, metavar="SIGNED", help="signed output")
    sign_cmd.add_argument("--json", action="store_true", help="print JSON")
    sign_cmd.set_defaults(func=_sign)

    verify_cmd = subparsers.add_parser(
        "verify",
        help="check a signed program against trusted public keys",
        description="Exit 0 naming the signing key when SIGNED verifies; exit 1 saying why not.",
    )
    verify_cmd.add_argument("signed", metavar="SIGNED", help="signed program file")
    _add_trusted(verify_cmd, required=True)
    verify_cmd.add_argument("--json", action="store_true", help="print JSON")
    verify_cmd.set_defaults(func=_verify)

    inspect = subparsers.add_parser(
        "inspect",
        help="show a program's layers, shapes, sizes, provenance and signature",
        description="Describe a plain or signed program; with --trusted, verify its signature.",
    )
    inspect.add_argument("program", metavar="PROGRAM", help="plain or signed program file")
    _add_trusted(inspect, required=False)
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(func=_inspect)


def _add_trusted(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--trusted",
        action="append",
        required=required,
        metavar="PUB_OR_DIR",
        help=f"trusted public key file, or a directory of {PUBLIC_SUFFIX} files (repeatable)",
    )


def _keygen(args: argparse.Namespace) -> int:
    private = Path(args.output)
    public = Path(f"{args.output}{PUBLIC_SUFFIX}")
    for path in (private, public):
        if path.exists() and not args.force:
            raise KeyFileError(f"{path} already exists; choose another -o or pass --force")
    if not private.parent.is_dir():
        raise KeyFileError(f"directory {private.parent} does not exist")
    key = SigningKey.generate()
    key.save(private)
    key.public_key.save(public)
    if args.json:
        print_json({"key_id": key.key_id, "private_key": str(private), "public_key": str(public)})
    else:
        print(f"key id {key.key_id}: private key {private} (keep secret), public key {public}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    data = read_bytes(args.program)
    if is_signed(data):
        raise ProgramFormatError(f"{args.program} is already signed; sign the plain program")
    codec.decode(data)
    key = SigningKey.load(args.key)
    envelope = sign(data, key)
    save_program(args.output, envelope)
    if args.json:
        print_json({"output": args.output, "sha256": envelope.sha256, "key_id": key.key_id})
    else:
        print(
            f"signed {args.program} (sha256 {envelope.sha256}) with key {key.key_id}: {args.output}"
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    trusted = TrustedKeys.load(*args.trusted)
    try:
        envelope = SignedProgram.from_bytes(read_bytes(args.signed))
        program_bytes = verify(envelope, trusted)
    except SignatureError as exc:
        raise SignatureError(f"{exc.reason}: {exc}", exc.reason) from None
    program = codec.decode(program_bytes)
    if args.json:
        print_json(
            {
                "verified": True,
                "key_id": envelope.key_id,
                "sha256": envelope.sha256,
                "program": program.name,
            }
        )
    else:
        print(
            f"verified: {args.signed} is program {program.name!r} (sha256 {envelope.sha256}) "
            f"signed by trusted key {envelope.key_id}"
        )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    data = read_bytes(args.program)
    signature: dict[str, Any] = {"signed": False, "status": "unsigned"}
    if is_signed(data):
        envelope = SignedProgram.from_bytes(data)
        signature = {"signed": True, "key_id": envelope.key_id, "sha256": envelope.sha256}
        if args.trusted:
            data = verify(envelope, TrustedKeys.load(*args.trusted))
            signature["status"] = f"verified (key {envelope.key_id})"
        else:
            data = envelope.program
            signature["status"] = f"signed by key {envelope.key_id}, not verified (pass --trusted)"
    elif args.trusted:
        signature["status"] = "unsigned (no signature to check against --trusted)"
    program = codec.decode(data)
    report = describe(program, data)
    report["file"] = str(args.program)
    report["signature"] = signature
    if args.json:
        print_json(report)
    else:
        _print_report(report)
    return 0


def describe(program: Program, data: bytes) -> dict[str, Any]:
    """What ``inspect`` shows, as JSON data."""
    shapes = validate(program)
    layers = []
    for layer, shape in zip(program.layers, shapes, strict=True):
        entry: dict[str, Any] = {
            "name": layer.name,
            "type": type(layer).__name__,
            "output_shape": list(shape),
        }
        if isinstance(layer, InputData):
            entry.update(bits=layer.bits, parameters=0, weight_bytes=0)
        else:
            entry.update(
                weights_bits=layer.weights_bits,
                activation_bits=None if layer.activation is None else layer.activation.bits,
                parameters=int(layer.weights.size),
                weight_bytes=packed_size(int(layer.weights.size), layer.weights_bits),
            )
        if isinstance(layer, Convolutional):
            entry.update(
                kernel=list(layer.kernel_size),
                stride=layer.stride,
                padding=layer.padding.value,
                pooling=layer.pooling.value,
            )
            if layer.pooling.value == "max":
                entry.update(pool_size=layer.pool_size, pool_stride=layer.pool_stride)
        layers.append(entry)
    last = program.layers[-1]
    hardware = program.hardware
    return {
        "name": program.name,
        "format_version": codec.FORMAT_VERSION,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "input": {"shape": list(program.input.shape), "bits": program.input.bits},
        "outputs": math.prod(shapes[-1]),
        "output_kind": "potentials"
        if isinstance(last, Convolutional | FullyConnected) and last.activation is None
        else "activations",
        "parameters": sum(entry["parameters"] for entry in layers),
        "weight_bytes": sum(entry["weight_bytes"] for entry in layers),
        "layers": layers,
        "labels": list(program.labels),
        "output_scales": None
        if program.output_scales is None
        else [float(x) for x in program.output_scales],
        "provenance": {
            "source_sha256": program.provenance.source_sha256,
            "converter_version": program.provenance.converter_version,
            "created": program.provenance.created,
            "fidelity": program.provenance.fidelity,
        },
        "hardware": None
        if hardware is None
        else {
            "device": hardware.device,
            "np_count": hardware.np_count,
            "program_info_bytes": len(hardware.program_info),
            "program_data_bytes": len(hardware.program_data),
        },
        "fbz_bytes": None if program.fbz is None else len(program.fbz),
        "input_spec": {
            "recorded": program.input_spec is not None,
            "spec": program.effective_input_spec.to_dict(),
            "summary": program.effective_input_spec.describe(),
        },
    }


def _fidelity_text(fidelity: dict[str, Any] | None) -> str:
    """What the program's recorded fidelity holds: a measurement, or only notes."""
    if not fidelity:
        return "none"
    notes = len(fidelity.get("notes", []))
    if "samples" not in fidelity:
        return (
            f"none: converted without calibration data (--calib); holds {notes} "
            "conversion note(s) (see --json)"
        )
    agreement = fidelity.get("top1_agreement")
    measured = f"measured on {fidelity['samples']} sample(s)"
    if agreement is not None:
        measured += f", top-1 agreement {100 * agreement:.2f}%"
    return f"{measured}, {notes} note(s) (see --json)"


_SHORT_TYPES = {"InputData": "input", "Convolutional": "conv", "FullyConnected": "dense"}


def _print_report(report: dict[str, Any]) -> None:
    rows = []
    for layer in report["layers"]:
        geometry = ""
        if layer["type"] == "Convolutional":
            geometry = (
                f"{layer['kernel'][0]}x{layer['kernel'][1]} s{layer['stride']} {layer['padding']}"
            )
            if layer["pooling"] == "max":
                geometry += f" +max {layer['pool_size']}/{layer['pool_stride']}"
            elif layer["pooling"] == "global_average":
                geometry += " +gap"
        if layer["type"] == "InputData":
            bits = f"in {layer['bits']}"
        else:
            bits = f"w{layer['weights_bits']} a{layer['activation_bits'] or '-'}"
        rows.append(
            [
                layer["name"],
                _SHORT_TYPES[layer["type"]],
                "x".join(str(n) for n in layer["output_shape"]),
                geometry,
                bits,
                layer["parameters"],
                layer["weight_bytes"],
            ]
        )
    print_table(
        f"program {report['name']!r}",
        ["layer", "type", "output", "geometry", "bits", "params", "bytes"],
        rows,
    )
    provenance = report["provenance"]
    hardware = report["hardware"]
    lines = [
        ("file", report["file"]),
        ("program", f"{report['size_bytes']} bytes, sha256 {report['sha256']}"),
        ("signature", report["signature"]["status"]),
        ("format version", report["format_version"]),
        ("input", f"{'x'.join(map(str, report['input']['shape']))}, {report['input']['bits']} bit"),
        (
            "input spec",
            report["input_spec"]["summary"]
            + ("" if report["input_spec"]["recorded"] else " (none recorded: the default)"),
        ),
        ("outputs", f"{report['outputs']} {report['output_kind']}"),
        ("parameters", f"{report['parameters']} ({report['weight_bytes']} bytes packed)"),
        ("labels", ", ".join(report["labels"]) or "none"),
        ("output scales", "none" if report["output_scales"] is None else "present"),
        ("source sha256", provenance["source_sha256"] or "unknown"),
        ("converter", provenance["converter_version"] or "unknown"),
        ("created", provenance["created"] or "unknown"),
        ("fidelity report", _fidelity_text(provenance["fidelity"])),
        (
            "hardware parts",
            "none"
            if hardware is None
            else f"{hardware['device']}: {hardware['np_count']} NPs, program_info "
            f"{hardware['program_info_bytes']} B, program_data {hardware['program_data_bytes']} B",
        ),
        ("akida .fbz", "none" if report["fbz_bytes"] is None else f"{report['fbz_bytes']} bytes"),
    ]
    for label, value in lines:
        print(f"{label + ':':<17}{value}")
