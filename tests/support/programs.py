"""Small random programs for any input shape, whose class depends on the input."""

from __future__ import annotations

import numpy as np

from spikefleet.events import InputSpec
from spikefleet.program.model import Activation, Convolutional, FullyConnected, InputData, Program
from spikefleet.program.shapes import output_shape


def program_for(spec: InputSpec, seed: int = 0, classes: int = 10) -> Program:
    """conv 3x3 s2 (8 filters, 1-bit) -> fully connected potentials, taking the spec's frames."""
    rng = np.random.default_rng(seed)
    assert spec.clip_bits is not None and spec.clip_bits <= 4, "a 4-bit input takes <= 4-bit counts"
    shape = spec.input_shape
    inputs = InputData("input", shape, 4)
    conv = Convolutional(
        "conv",
        rng.integers(-7, 8, (3, 3, shape[2], 8)).astype(np.int8),
        rng.integers(0, 6, 8).astype(np.int32),
        stride=2,
        activation=Activation(1, np.ones(8, np.float32)),
    )
    features = int(np.prod(output_shape(conv, shape)))
    head = FullyConnected(
        "head",
        rng.integers(-7, 8, (features, classes)).astype(np.int8),
        np.zeros(classes, np.int32),
    )
    return Program(
        name=f"spec-test-{seed}",
        layers=[inputs, conv, head],
        labels=[str(i) for i in range(classes)],
        output_scales=rng.uniform(0.5, 2.0, classes).astype(np.float32),
        input_spec=spec,
    )
