"""Frames/s of spikefleet's engine vs akida 2.19.3's software backend, same run.

Run: .venv/bin/python benchmarks/engine.py [--network gap|flat|both] [--json]

``gap``: the reference network of DESIGN.md and issue 2 (InputData(34,34,2,
4-bit) -> Conv(32, 3x3, s2) -> Conv(64, 3x3, s2, global average pool) ->
FC(10)) with random int4 weights and thresholds calibrated so that about 15% of
conv1 and half of conv2 neurons spike. ``flat``: the shipped N-DIGITS model's
topology (the same convolutions without pooling, conv2 at 15% spikes, then
FC(5184 -> 10)). Both run on DVS-like frames: about 10% of pixels active
(either polarity) with small (geometric) event counts. Both engines run the
same frames; the outputs must be identical element for element, or the
benchmark fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np

from spikefleet.brainchip import to_akida
from spikefleet.engine import Engine
from spikefleet.program.model import (
    Activation,
    Convolutional,
    FullyConnected,
    InputData,
    Pooling,
    Program,
)


def dvs_frames(count: int, rng: np.random.Generator, density: float = 0.053) -> np.ndarray:
    shape = (count, 34, 34, 2)
    counts = np.minimum(rng.geometric(0.5, size=shape), 15)
    return np.where(rng.random(shape) < density, counts, 0).astype(np.uint8)


def reference_program(seed: int = 0, *, pooled: bool = True) -> Program:
    """The reference architecture with thresholds calibrated on DVS-like frames;
    without ``pooled``, conv2 keeps its 9x9 map and the classifier reads it flat."""
    rng = np.random.default_rng(seed)
    conv1 = Convolutional(
        "conv1",
        rng.integers(-7, 8, (3, 3, 2, 32)).astype(np.int8),
        np.zeros(32, np.int32),
        stride=2,
        activation=Activation(1, np.ones(32, np.float32)),
    )
    conv2 = Convolutional(
        "conv2",
        rng.integers(-7, 8, (3, 3, 32, 64)).astype(np.int8),
        np.zeros(64, np.int32),
        stride=2,
        pooling=Pooling.GLOBAL_AVERAGE if pooled else Pooling.NONE,
        activation=Activation(1, np.ones(64, np.float32)),
    )
    inputs = 64 if pooled else 9 * 9 * 64
    fc = FullyConnected(
        "fc", rng.integers(-7, 8, (inputs, 10)).astype(np.int8), np.zeros(10, np.int32)
    )
    source = InputData("input", (34, 34, 2), 4)
    calibration = dvs_frames(256, rng)
    conv1.activation = None
    potentials = Engine(Program("calibrate", [source, conv1])).run(calibration).outputs
    conv1.threshold = np.percentile(potentials, 85, axis=(0, 1, 2)).astype(np.int32)
    conv1.activation = Activation(1, np.ones(32, np.float32))
    conv2.activation = None
    sums = Engine(Program("calibrate", [source, conv1, conv2])).run(calibration).outputs
    conv2.threshold = np.percentile(sums, 50 if pooled else 85, axis=(0, 1, 2)).astype(np.int32)
    conv2.activation = Activation(1, np.ones(64, np.float32))
    return Program("reference" if pooled else "reference-flat", [source, conv1, conv2, fc])


def frames_per_second(
    runs: dict[str, Callable[[np.ndarray], object]], batches: list[np.ndarray], passes: int
) -> dict[str, float]:
    """Best pass of each runner over ``batches``; passes alternate between the
    runners so that load from other work on the machine hits both alike."""
    frames = sum(len(batch) for batch in batches)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(passes):
        for name, run in runs.items():
            start = time.perf_counter()
            for batch in batches:
                run(batch)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: frames / seconds for name, seconds in best.items()}


def measure(program: Program, frames: np.ndarray, passes: int) -> dict[str, object]:
    engine = Engine(program)
    model = to_akida(program)
    expected = model.forward(frames)
    result = engine.run(frames, spike_counts=True)
    exact = bool(np.array_equal(result.outputs, expected))
    assert result.spike_counts is not None
    rates = {
        name: float(counts.mean() / np.prod(layer.output_shape))
        for (name, counts), layer in zip(result.spike_counts.items(), engine.layers, strict=True)
    }
    rows = []
    for batch in (1, 64):
        batches = [frames[i : i + batch] for i in range(0, len(frames), batch)]
        if batch == 1:
            batches = batches[: max(1, len(batches) // 4)]
        speeds = frames_per_second({"engine": engine.run, "akida": model.forward}, batches, passes)
        ours, theirs = speeds["engine"], speeds["akida"]
        rows.append(
            {"batch": batch, "engine_fps": ours, "akida_fps": theirs, "ratio": ours / theirs}
        )
    return {"network": program.name, "bit_exact": exact, "layer_activity": rates, "results": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1024, help="frames per pass")
    parser.add_argument("--passes", type=int, default=7, help="passes per runner (best counts)")
    parser.add_argument(
        "--network", choices=("gap", "flat", "both"), default="both", help="which network"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    frames = dvs_frames(args.frames, rng)
    networks = {"gap": [True], "flat": [False], "both": [True, False]}[args.network]
    reports = [
        measure(reference_program(pooled=pooled), frames, args.passes) for pooled in networks
    ]
    report = {
        "frames": len(frames),
        "input_active_pixels": float((frames.max(axis=3) > 0).mean()),
        "networks": reports,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{len(frames)} frames, active input pixels: {report['input_active_pixels']:.1%}")
        for entry in reports:
            rates = entry["layer_activity"]
            assert isinstance(rates, dict)
            print(f"\n{entry['network']}: bit-exact {entry['bit_exact']}; non-zero outputs: "
                  + ", ".join(f"{k} {v:.1%}" for k, v in rates.items()))  # fmt: skip
            print(f"{'batch':>5} {'engine f/s':>12} {'akida f/s':>12} {'ratio':>7}")
            rows = entry["results"]
            assert isinstance(rows, list)
            for row in rows:
                print(
                    f"{row['batch']:>5} {row['engine_fps']:>12,.0f} {row['akida_fps']:>12,.0f} "
                    f"{row['ratio']:>6.1f}x"
                )
    return 0 if all(entry["bit_exact"] for entry in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
