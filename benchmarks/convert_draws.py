"""How much the calibrated int4 program moves with the calibration set: K draws of the train split.

    python benchmarks/convert_draws.py --data NDIGITS_ROOT [--draws 8] [--calib 256] [--json]

Converts the reference network once without calibration and once per draw
(``--calib`` train samples, ``default_rng(100 + k)``, so draw k is the same in
every run), and scores each program on the train samples outside its draw
(held out: what methods and settings are chosen on) and on the test split
(only reported, never used to choose). Per draw: top-1 disagreements with the
float model and errors against the labels on both sets, the mean squared error
of the summed class scores against the float ones on the held-out set, and the
conversion's CPU and wall time (hardware mapping off). Then the mean and the
worst over the draws.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--weights", type=Path, help="ReferenceNet state_dict (.safetensors)")
    parser.add_argument("--data", type=Path, help="N-DIGITS root (default: the dataset's)")
    parser.add_argument("--draws", type=int, default=8, help="calibration draws")
    parser.add_argument("--calib", type=int, default=256, help="train samples per draw")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import structlog

    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))
    import torch

    torch.set_num_threads(2)
    from spikefleet.convert import ConvertOptions, convert, extract
    from spikefleet.datasets import ndigits
    from spikefleet.engine import Engine
    from spikefleet.reference import load_reference_model
    from spikefleet.reference.model import frames_to_input

    model = load_reference_model(args.weights)
    train, train_labels = ndigits.load_frames(args.data, "train")
    test, test_labels = ndigits.load_frames(args.data, "test")

    def float_scores(frames: np.ndarray) -> np.ndarray:
        flat = frames.reshape(-1, *frames.shape[2:])
        with torch.no_grad():
            scores = model(frames_to_input(flat)).numpy().astype(np.float64)
        return scores.reshape(len(frames), frames.shape[1], -1).sum(1)

    def program_scores(program: Any, frames: np.ndarray) -> np.ndarray:
        flat = frames.reshape(-1, *frames.shape[2:])
        out = Engine(program).run(flat).outputs.reshape(len(flat), -1).astype(np.float64)
        if program.output_scales is not None:
            out = out * program.output_scales
        return out.reshape(len(frames), frames.shape[1], -1).sum(1)

    float_train, float_test = float_scores(train), float_scores(test)
    options = ConvertOptions(hardware=False)

    def score(program: Any, held: np.ndarray) -> dict[str, Any]:
        got = program_scores(program, train[held])
        got_test = program_scores(program, test)
        return {
            "held_out_disagreements": int((got.argmax(1) != float_train[held].argmax(1)).sum()),
            "held_out_errors": int((got.argmax(1) != train_labels[held]).sum()),
            "held_out_score_mse": round(float(((got - float_train[held]) ** 2).mean()), 4),
            "test_disagreements": int((got_test.argmax(1) != float_test.argmax(1)).sum()),
            "test_errors": int((got_test.argmax(1) != test_labels).sum()),
        }

    results: dict[str, Any] = {
        "train_samples": len(train),
        "test_samples": len(test),
        "float_test_errors": int((float_test.argmax(1) != test_labels).sum()),
        "draws": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "ref.safetensors"
        extract(model, frames_to_input(train.reshape(-1, *train.shape[2:])[:3]), bundle)
        plain = convert(bundle, options=options).program
        results["no_calibration"] = score(plain, np.arange(len(train)))
        for k in range(args.draws):
            pick = np.sort(np.random.default_rng(100 + k).choice(len(train), args.calib, False))
            held = np.setdiff1d(np.arange(len(train)), pick)
            cpu, wall = time.process_time(), time.perf_counter()
            program = convert(bundle, calibration=train[pick], options=options).program
            row = {
                "cpu_s": round(time.process_time() - cpu, 3),
                "wall_s": round(time.perf_counter() - wall, 3),
                "held_out_samples": len(held),
                **score(program, held),
            }
            results["draws"].append(row)
            print(f"draw {k}: {row}", file=sys.stderr, flush=True)
    for key in ("held_out_disagreements", "held_out_score_mse", "test_errors", "cpu_s", "wall_s"):
        values = [row[key] for row in results["draws"]]
        results[f"{key}_mean"] = round(float(np.mean(values)), 4)
        results[f"{key}_worst"] = max(values)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            if key != "draws":
                print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
