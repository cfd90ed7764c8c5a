"""Size and speed of the program format on the reference network.

Run: .venv/bin/python benchmarks/program_format.py

The program carries hardware parts of the sizes akida 2.19.3 produced for the
reference network on a virtual AKD1000 (DESIGN.md: 452 B program_info,
155,684 B program_data), filled with random bytes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from spikefleet.program import (
    Activation,
    Convolutional,
    FullyConnected,
    HardwareParts,
    InputData,
    Pooling,
    Program,
    Provenance,
)
from spikefleet.program.codec import decode, encode
from spikefleet.program.signing import SigningKey, TrustedKeys, sign, verify


def reference_program(rng: np.random.Generator) -> Program:
    def conv(name: str, cin: int, filters: int, pooling: Pooling) -> Convolutional:
        return Convolutional(
            name,
            rng.integers(-7, 8, (3, 3, cin, filters)).astype(np.int8),
            rng.integers(-100, 100, filters).astype(np.int32),
            stride=2,
            pooling=pooling,
            activation=Activation(1, np.ones(filters, np.float32)),
        )

    return Program(
        name="reference",
        layers=[
            InputData("input", (34, 34, 2), 4),
            conv("conv1", 2, 32, Pooling.NONE),
            conv("conv2", 32, 64, Pooling.GLOBAL_AVERAGE),
            FullyConnected(
                "fc", rng.integers(-7, 8, (64, 10)).astype(np.int8), np.zeros(10, np.int32)
            ),
        ],
        labels=[str(digit) for digit in range(10)],
        output_scales=np.full(10, 0.01, np.float32),
        provenance=Provenance("00" * 32, "bench", "2026-11-27T00:00:00Z", {"agreement": 1.0}),
        hardware=HardwareParts("AKD1000", rng.bytes(452), rng.bytes(155_684), np_count=65),
    )


def per_call_ms(fn: Callable[[], object], repeats: int = 7, number: int = 20) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return 1000 * statistics.median(times)


def main() -> None:
    program = reference_program(np.random.default_rng(0))
    data = encode(program)
    key = SigningKey.generate()
    trusted = TrustedKeys([key.public_key])
    signed = sign(data, key).to_bytes()
    weights = sum(
        layer.weights.size
        for layer in program.layers
        if isinstance(layer, Convolutional | FullyConnected)
    )
    rows = [
        ("encoded size (bytes)", f"{len(data):,}"),
        ("  of which 4-bit weights (bytes)", f"{weights // 2:,}"),
        ("signed envelope overhead (bytes)", f"{len(signed) - len(data)}"),
        ("encode (ms)", f"{per_call_ms(lambda: encode(program)):.3f}"),
        ("decode + validate (ms)", f"{per_call_ms(lambda: decode(data)):.3f}"),
        ("sign (ms)", f"{per_call_ms(lambda: sign(data, key)):.3f}"),
        ("verify (ms)", f"{per_call_ms(lambda: verify(signed, trusted)):.3f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
