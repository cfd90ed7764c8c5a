"""``spikefleet convert``: an SNNTorch model in, a (signed) Akida program out, with its fidelity."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from spikefleet.cli.advice import cli_advice
from spikefleet.cli.output import print_json, print_table, progress
from spikefleet.errors import ConversionError

if TYPE_CHECKING:
    from spikefleet.events.spec import InputSpec

_ARCH_HELP = """\
architecture strings (--arch), tokens separated by spaces:
  Input(H,W,C)                    input frame shape (or --input-shape / --calib)
  Conv(filters,k[,sN][,pN|same|valid])  Conv2d, stride 1 and padding k//2 by default
  Pad(left,right,top,bottom)      zero padding before a Conv (nn.ZeroPad2d)
  FC(units)                       Linear (spatial inputs flattened in torch order)
  Leaky[(threshold=1,beta=0)]     SNNTorch Leaky (values used if the weights carry none)
  BN  GAP  MaxPool(k[,sN])  Flatten
weights bind in order: each Conv/FC takes the next 'prefix.weight' group, each BN the
next group with running_mean, each Leaky the next group with a threshold.
example: Input(34,34,2) Pad(0,1,0,1) Conv(32,3,s2,p0) Leaky Conv(64,3,s2) GAP Leaky FC(10) Leaky
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an SNNTorch model to an Akida int4 program",
        description=(
            "Convert MODEL (a spikefleet.extract bundle, a state_dict .pt/.safetensors with "
            "--arch, a directory of fc1_weight.npy/lif1_threshold.txt files, or a .nir graph) "
            "into an Akida 1.0 program. With --calib, the program's fidelity to the float "
            "model is measured and stored in it."
        ),
        epilog=_ARCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="model file or directory")
    parser.add_argument("-o", "--output", required=True, metavar="PROGRAM", help="program file")
    parser.add_argument(
        "--arch",
        metavar="ARCH",
        help="layer chain for weights-only inputs, e.g. "
        "'Input(34,34,2) Conv(32,3,s2) Leaky Conv(64,3,s2) GAP Leaky FC(10) Leaky'",
    )
    parser.add_argument(
        "--input-shape", metavar="H,W,C", help="input frame shape when the model has none"
    )
    parser.add_argument(
        "--input-scale",
        type=float,
        metavar="X",
        help="the model was trained on X per event count (folded into the first layer)",
    )
    parser.add_argument(
        "--calib",
        metavar="DATA",
        help="calibration/test data: N-DIGITS root, class folders of N-MNIST .bin files, "
        ".npz with frames (and labels) or .npy frames",
    )
    parser.add_argument("--labels", metavar="FILE", help="labels for --calib (.npy or text)")
    parser.add_argument("--split", default="test", help="N-DIGITS split for --calib (test)")
    parser.add_argument(
        "--limit", type=int, metavar="N", help="use the first N calibration samples"
    )
    parser.add_argument("--bits", type=int, choices=(4, 2, 1), default=4, help="weight bits (4)")
    parser.add_argument(
        "--clip",
        choices=("auto", "mse", "max"),
        default="auto",
        help="weight clipping per channel (auto: mse; with --calib, spiking layers clipped "
        "for the fewest flipped decisions where held-out calibration rows confirm it)",
    )
    parser.add_argument(
        "--allow-beta", action="store_true", help="convert beta != 0 neurons as beta = 0"
    )
    parser.add_argument(
        "--allow-shift",
        action="store_true",
        help="accept conv padding Akida can only match with shifted windows",
    )
    parser.add_argument(
        "--no-hardware", action="store_true", help="skip AKD1000 mapping and the .fbz"
    )
    parser.add_argument(
        "--input-spec",
        metavar="FILE",
        help="how events become the model's frames (JSON or TOML with tonic ToFrame keys); "
        "recorded in the program (default: the bundle's, else the documented default)",
    )
    parser.add_argument(
        "--readout",
        choices=("potential", "spikes"),
        help="read the last layer as its membrane potential (the default of bundles and "
        "--arch alike) or as spikes; --arch can also end with Readout(spikes)",
    )
    parser.add_argument("--name", help="program name (default: the model file's name)")
    parser.add_argument("--sign-key", metavar="KEY", help="sign with this private key")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=convert_command)


def _shape(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        h, w, c = (int(part) for part in text.split(","))
    except ValueError:
        raise ConversionError(f"--input-shape {text!r}: expected H,W,C such as 34,34,2") from None
    return (h, w, c)


def convert_command(args: argparse.Namespace) -> int:
    if getattr(args, "server", None):
        from spikefleet.cli.server_commands import convert_remotely

        return convert_remotely(args)
    return convert_locally(args)


def convert_locally(args: argparse.Namespace) -> int:
    """Convert on this machine and write the program file."""
    from spikefleet.convert import ConvertOptions, convert
    from spikefleet.convert.calibration import load_calibration, load_labels
    from spikefleet.program.files import save_program
    from spikefleet.program.signing import SigningKey

    key = SigningKey.load(args.sign_key) if args.sign_key else None
    frames = labels = None
    if args.calib:
        frames, labels = load_calibration(
            args.calib, split=args.split, limit=args.limit, input_spec=_spec_of(args)
        )
    if args.labels:
        labels = load_labels(args.labels)
        if args.limit is not None:
            labels = labels[: args.limit]
    options = ConvertOptions(
        weight_bits=args.bits,
        input_shape=_shape(args.input_shape),
        input_scale=args.input_scale,
        allow_beta=args.allow_beta,
        allow_shift=args.allow_shift,
        clip=args.clip,
        name=args.name,
        sign_key=key,
        hardware=not args.no_hardware,
        input_spec=_spec_of(args),
        readout=args.readout,
    )
    with progress("converting", total=6) as advance:
        done = [0]

        def report(step: str, steps_done: int, _total: int) -> None:
            advance(steps_done - done[0], description=step)
            done[0] = steps_done

        result = convert(
            args.model,
            arch=args.arch,
            calibration=frames,
            labels=labels,
            options=options,
            progress=report,
        )
    path = save_program(args.output, result.data)
    summary: dict[str, Any] = {
        "output": str(path),
        "program": result.program.name,
        "bytes": len(result.data),
        "signed": result.signed,
        "seconds": round(result.seconds, 3),
        "notes": result.notes,
        "fidelity": result.report.to_dict() if result.report is not None else None,
    }
    if result.program.hardware is not None:
        summary["akd1000_nps"] = result.program.hardware.np_count
    if args.json:
        print_json(summary)
        return 0
    rows = [
        ("output", summary["output"]),
        ("signed", "yes" if result.signed else "no"),
        ("size", f"{len(result.data)} bytes"),
        ("time", f"{result.seconds:.2f} s"),
    ]
    if "akd1000_nps" in summary:
        rows.append(("AKD1000 NPs", str(summary["akd1000_nps"])))
    if result.report is not None:
        rows.extend(result.report.rows())
    print_table(f"converted {result.program.name}", ("measure", "value"), rows)
    for note in result.notes:
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
