"""``spikefleet run | import-akida | export-akida``: run programs locally, and
move them between spikefleet and BrainChip's akida model files."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from spikefleet.cli.output import print_json, print_table, progress
from spikefleet.errors import EventFormatError, FrameError, HardwareMappingError, SpikefleetError
from spikefleet.events.binning import spec_frames
from spikefleet.events.decision import class_scores, decide
from spikefleet.program.files import load_program, save_program
from spikefleet.program.model import Convolutional, FullyConnected, Program
from spikefleet.program.signing import PUBLIC_SUFFIX, TrustedKeys, is_signed

PROGRESS_BATCH = 1024  # frames per engine call when showing progress
CLASSES_SHOWN = 32  # per-sample classes in the table; --json has them all


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="run a program on frames with the bit-exact int4 engine",
        description="Run PROGRAM on IN.npy (uint8, N x H x W x C, or S samples x T frames x "
        "H x W x C), or on one recording's events made into frames by the program's input "
        "spec, and save the last layer's outputs, exactly akida's Model.forward, to OUT.npy; "
        "print each sample's class (the argmax of its frames' summed scores).",
    )
    run.add_argument("program", metavar="PROGRAM", help="plain or signed program file")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--frames", metavar="IN.npy", help="uint8 frames (N,H,W,C)")
    source.add_argument(
        "--events",
        metavar="EVENTS",
        help="one recording (.npy of EVENT_DTYPE records, N-MNIST .bin or .aedat4), binned by "
        "the program's input spec and answered by its decision rule, as the agent does",
    )
    run.add_argument(
        "--live",
        action="store_true",
        help="with --events: bin as the agent bins a live stream (no sample end)",
    )
    run.add_argument("-o", "--output", required=True, metavar="OUT.npy", help="outputs file")
    run.add_argument(
        "--frames-per-sample",
        type=int,
        metavar="T",
        help="consecutive frames that make one sample (default: 1, or T of an S x T x H x W x C "
        "array); N-DIGITS samples are 3 frames",
    )
    _add_trusted(run)
    run.add_argument(
        "--spike-counts", action="store_true", help="also report mean non-zero outputs per layer"
    )
    run.add_argument("--json", action="store_true", help="print JSON")
    run.set_defaults(func=_run)

    imp = subparsers.add_parser(
        "import-akida",
        help="turn an akida .fbz model into a spikefleet program",
        description="Read an Akida 1.0 model (InputData, Convolutional, FullyConnected) saved "
        "by akida and write it as a spikefleet program that keeps the .fbz bytes.",
    )
    imp.add_argument("model", metavar="MODEL.fbz", help="akida model file")
    imp.add_argument("-o", "--output", required=True, metavar="PROGRAM", help="program file")
    imp.add_argument("--name", help="program name (default: the model file's stem)")
    imp.add_argument("--json", action="store_true", help="print JSON")
    imp.set_defaults(func=_import_akida)

    exp = subparsers.add_parser(
        "export-akida",
        help="write a program as an akida .fbz and map it onto an AKD1000",
        description="Write PROGRAM as an akida .fbz model, map it onto a virtual AKD1000 and "
        "store the hardware parts (program_info, program_data) and .fbz in the program; "
        "report the NPs used, or why it does not fit (exit 1).",
    )
    exp.add_argument("program", metavar="PROGRAM", help="plain or signed program file")
    exp.add_argument("-o", "--output", required=True, metavar="MODEL.fbz", help="akida model")
    exp.add_argument(
        "--program-out",
        metavar="PROGRAM",
        help="where to write the program with its hardware parts (default: update PROGRAM "
        "in place when it is a plain file)",
    )
    exp.add_argument("--device", default="AKD1000", help="device to map onto (AKD1000)")
    exp.add_argument("--no-map", action="store_true", help="only write the .fbz")
    _add_trusted(exp)
    exp.add_argument("--json", action="store_true", help="print JSON")
    exp.set_defaults(func=_export_akida)


def _add_trusted(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trusted",
        action="append",
        metavar="PUB_OR_DIR",
        help=f"verify a signed PROGRAM against this public key or directory of {PUBLIC_SUFFIX} "
        "files (repeatable)",
    )


def _load(args: argparse.Namespace) -> Program:
    trusted = TrustedKeys.load(*args.trusted) if args.trusted else None
    return load_program(args.program, trusted)


def _load_frames(path: str) -> np.ndarray:
    try:
        frames = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FrameError(f"frames file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise FrameError(f"{path} is not a .npy array of frames: {exc}") from None
    if not isinstance(frames, np.ndarray):
        raise FrameError(f"{path} holds several arrays; save one uint8 array with np.save")
    return frames


def _load_events(path: str) -> np.ndarray:
    from spikefleet.events import as_events, read_aedat4, read_nmnist

    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise EventFormatError(f"events file {path} does not exist")
    if suffix == ".bin":
        return read_nmnist(path)
    if suffix == ".aedat4":
        return read_aedat4(path)
    try:
        events = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EventFormatError(
            f"{path} is not a .npy of EVENT_DTYPE records, an N-MNIST .bin or an .aedat4: {exc}"
        ) from None
    return as_events(events)


def _run(args: argparse.Namespace) -> int:
    from spikefleet.engine import Engine

    program = _load(args)
    spec = None
    if args.events:
        spec = program.effective_input_spec
        if args.live and spec.end_time is not None:
            spec = replace(spec, end_time=None)
        frames = spec_frames(_load_events(args.events), spec)
        if args.frames_per_sample is not None:
            raise SpikefleetError(
                "--frames-per-sample applies to --frames: with --events the recording is one sample"
            )
    else:
        if args.live:
            raise SpikefleetError("--live applies to --events: drop it or pass --events")
        frames = _load_frames(args.frames)
    engine = Engine(program)
    sample_shape: tuple[int, ...] = ()
    per_sample = args.frames_per_sample
    if frames.ndim == 5:
        if per_sample not in (None, frames.shape[1]):
            raise FrameError(
                f"--frames-per-sample {per_sample} but {args.frames} holds samples of "
                f"{frames.shape[1]} frames"
            )
        sample_shape, per_sample = frames.shape[:2], frames.shape[1]
        frames = frames.reshape(-1, *frames.shape[2:])
    frames = engine.check_frames(frames)
    if spec is not None:
        per_sample = max(len(frames), 1)  # the recording is one sample
    per_sample = per_sample or 1
    if per_sample < 1 or len(frames) % per_sample:
        raise FrameError(
            f"--frames-per-sample {per_sample} does not divide the {len(frames)} frames "
            f"of {args.frames}"
        )
    start = time.perf_counter()
    parts = []
    counts: dict[str, list[np.ndarray]] = {}
    total = len(frames)
    with progress("running", total=total) as advance:
        for begin in range(0, total, PROGRESS_BATCH):
            result = engine.run(frames[begin : begin + PROGRESS_BATCH], spike_counts=True)
            parts.append(result.outputs)
            for name, values in (result.spike_counts or {}).items():
                counts.setdefault(name, []).append(values)
            advance(len(result.outputs))
    seconds = time.perf_counter() - start
    dtype = np.uint8 if engine.layers[-1].has_activation else np.int32
    outputs = np.concatenate(parts) if parts else np.empty((0, *engine.output_shape), dtype=dtype)
    scores = engine.class_scores(outputs)
    classes = scores.reshape(-1, per_sample, scores.shape[1]).sum(axis=1).argmax(axis=1)
    saved = outputs.reshape(*sample_shape, *outputs.shape[1:]) if sample_shape else outputs
    try:
        with open(args.output, "wb") as out:
            np.save(out, saved)
    except OSError as exc:
        raise SpikefleetError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    report: dict[str, Any] = {
        "program": program.name,
        "frames": total,
        "output": args.output,
        "samples": len(classes),
        "frames_per_sample": per_sample,
        "classes": [int(c) for c in classes],
        "output_shape": list(saved.shape),
        "output_dtype": str(saved.dtype),
        "seconds": round(seconds, 6),
        "frames_per_second": round(total / seconds, 1) if seconds > 0 else None,
    }
    if program.labels and all(0 <= c < len(program.labels) for c in report["classes"]):
        report["class_labels"] = [program.labels[c] for c in report["classes"]]
    if spec is not None:
        frame_scores = class_scores(outputs, program.output_scales)
        decisions, predicted = decide(frame_scores, spec)
        report["frame_classes"] = frame_scores.argmax(axis=1).tolist() if total else []
        report["decision"] = spec.decision.value
        report["decisions"] = decisions.tolist()
        report["classes"] = [predicted]
    if args.spike_counts:
        report["mean_nonzero_outputs"] = {
            name: float(np.concatenate(values).mean()) if values else 0.0
            for name, values in counts.items()
        }
    if args.json:
        print_json(report)
        return 0
    hidden = ("mean_nonzero_outputs", "classes", "class_labels", "frame_classes", "decisions")
    rows = [[key, value] for key, value in report.items() if key not in hidden]
    named = report.get("class_labels", report["classes"])
    shown = ", ".join(map(str, named[:CLASSES_SHOWN]))
    if len(named) > CLASSES_SHOWN:
        shown += f", ... ({len(named) - CLASSES_SHOWN} more with --json)"
    rows.append(["class per sample", shown or "-"])
    for name, mean in report.get("mean_nonzero_outputs", {}).items():
        rows.append([f"mean non-zero outputs of {name}", f"{mean:.2f}"])
    print_table(f"run {program.name}", ["what", "value"], rows)
    return 0


def _layer_rows(program: Program) -> list[dict[str, Any]]:
    from spikefleet.program.shapes import layer_output_shapes

    rows = []
    for layer, shape in zip(program.layers, layer_output_shapes(program), strict=True):
        row: dict[str, Any] = {"name": layer.name, "type": type(layer).__name__}
        row["output_shape"] = list(shape)
        if isinstance(layer, Convolutional | FullyConnected):
            row["weights_bits"] = layer.weights_bits
            row["act_bits"] = layer.activation.bits if layer.activation else None
        rows.append(row)
    return rows


def _import_akida(args: argparse.Namespace) -> int:
    from spikefleet.brainchip import load_fbz

    program = load_fbz(args.model)
    if args.name:
        program.name = args.name
    path = save_program(args.output, program)
    layers = _layer_rows(program)
    if args.json:
        print_json({"program": program.name, "output": str(path), "layers": layers})
        return 0
    print_table(
        f"imported {args.model} as program {program.name!r}: {path}",
        ["layer", "type", "output", "weights bits", "act bits"],
        [
            [
                r["name"],
                r["type"],
                "x".join(map(str, r["output_shape"])),
                r.get("weights_bits", ""),
                r.get("act_bits", ""),
            ]
            for r in layers
        ],
    )
    return 0


def _export_akida(args: argparse.Namespace) -> int:
    from spikefleet.brainchip import fbz_bytes, map_hardware

    program = _load(args)
    data = fbz_bytes(program)
    try:
        Path(args.output).write_bytes(data)
    except OSError as exc:
        raise SpikefleetError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    report: dict[str, Any] = {"program": program.name, "fbz": args.output, "fbz_bytes": len(data)}
    if not args.no_map:
        try:
            parts = map_hardware(program, device=args.device)
        except HardwareMappingError as exc:
            raise HardwareMappingError(f"wrote {args.output}, but {exc}") from None
        report.update(
            device=parts.device,
            nps=parts.np_count,
            program_info_bytes=len(parts.program_info),
            program_data_bytes=len(parts.program_data),
        )
        program.hardware = parts
    program.fbz = data
    target = args.program_out
    if target is None and not is_signed(Path(args.program).read_bytes()):
        target = args.program
    if target is not None:
        save_program(target, program)
        report["program_out"] = str(target)
    else:
        report["program_out"] = None
        report["note"] = "PROGRAM is signed and was left as is; use --program-out to save a copy"
    if args.json:
        print_json(report)
        return 0
    print_table(f"export {program.name}", ["what", "value"], [[k, v] for k, v in report.items()])
    return 0
