"""``spikefleet data``: build the N-DIGITS reference task, inspect event recordings."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from spikefleet.cli.output import print_json, print_table, progress
from spikefleet.errors import DatasetError, EventFormatError


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="event-camera data: N-DIGITS, recordings")
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    build = commands.add_parser(
        "ndigits",
        help="record the N-DIGITS dataset (sklearn digits through the DVS emulator)",
        description="Record N-DIGITS into a cache directory (no download); same seed, same bytes.",
    )
    build.add_argument(
        "--root",
        type=Path,
        help="output directory (default $SPIKEFLEET_DATA/ndigits or ~/.cache/spikefleet/ndigits)",
    )
    build.add_argument("--seed", type=int, default=0, help="emulator seed (default 0)")
    build.add_argument(
        "--limit", type=int, metavar="N", help="record only the first N digits (a quick look)"
    )
    build.add_argument("--json", action="store_true", help="print the summary as JSON")
    build.set_defaults(func=_ndigits)

    inspect = commands.add_parser(
        "inspect",
        help="summarize an event recording (N-MNIST .bin or AEDAT4 .aedat4)",
        description="Summarize an event recording: events, time span, sensor extent, polarity.",
    )
    inspect.add_argument("path", type=Path, help=".bin (N-MNIST) or .aedat4 file")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(func=_inspect)


def _ndigits(args: argparse.Namespace) -> int:
    from spikefleet.datasets import ndigits

    if args.limit is not None and args.limit <= 0:
        raise DatasetError(f"--limit must be positive, got {args.limit}")
    with progress("recording N-DIGITS", total=args.limit or ndigits.SIZE) as advance:
        done = 0

        def report(finished: int, total: int) -> None:
            nonlocal done
            advance(finished - done)
            done = finished

        root = ndigits.build(args.root, seed=args.seed, limit=args.limit, progress=report)
    index = ndigits.read_index(root)
    splits = Counter(entry["split"] for entry in index["samples"])
    summary = {
        "root": str(root),
        "seed": index["seed"],
        "samples": len(index["samples"]),
        "train": splits["train"],
        "test": splits["test"],
        "bytes": sum((root / e["file"]).stat().st_size for e in index["samples"]),
    }
    if args.json:
        print_json(summary)
    else:
        print_table("N-DIGITS", ["field", "value"], list(summary.items()))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from spikefleet.events import read_aedat4, read_nmnist

    suffix = args.path.suffix.lower()
    if suffix == ".bin":
        events = read_nmnist(args.path)
    elif suffix == ".aedat4":
        events = read_aedat4(args.path)
    else:
        raise EventFormatError(
            f"cannot tell the format of {args.path}: name N-MNIST files *.bin, AEDAT4 *.aedat4"
        )
    empty = len(events) == 0
    summary = {
        "path": str(args.path),
        "events": len(events),
        "on": int(events["p"].sum()),
        "off": int((~events["p"]).sum()),
        "t_first_us": None if empty else int(events["t"].min()),
        "t_last_us": None if empty else int(events["t"].max()),
        "width": None if empty else int(events["x"].max()) + 1,
        "height": None if empty else int(events["y"].max()) + 1,
    }
    if args.json:
        print_json(summary)
    else:
        print_table(f"{args.path.name}", ["field", "value"], list(summary.items()))
    return 0
