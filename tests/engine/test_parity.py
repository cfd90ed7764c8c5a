"""The engine computes exactly what BrainChip's akida 2.19.3 software backend computes.

Each case is a generated program (1-4 layers; kernels 1/3/5, strides 1/2,
same/valid padding, max and global average pooling, 1/2/4-bit weights and
activations, no activation on the last layer, thresholds of both signs, 1-64
channels, 8-40 px inputs) built as a spikefleet Program, converted with
``to_akida``, and run on sparse and dense frames by both.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.generated import random_frames, random_program

from spikefleet.brainchip import to_akida
from spikefleet.engine import Engine
from spikefleet.program.model import Program

PARITY = settings(
    max_examples=220,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def truncated(program: Program, layers: int) -> Program:
    return Program(name=program.name, layers=program.layers[: layers + 1])


@PARITY
@given(seed=st.integers(0, 2**31 - 1))
def test_outputs_equal_akida_forward_element_for_element(seed: int) -> None:
    program = random_program(seed)
    frames = random_frames(seed, program, 4)
    expected = to_akida(program).forward(frames)
    engine = Engine(program)
    result = engine.run(frames)
    assert result.outputs.dtype == expected.dtype
    assert result.outputs.shape == expected.shape
    assert np.array_equal(result.outputs, expected)
    single = engine.run(frames[1:2]).outputs
    assert single.dtype == expected.dtype
    assert np.array_equal(single, expected[1:2])


@settings(max_examples=40, derandomize=True, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_spike_counts_match_akida_per_layer_outputs(seed: int) -> None:
    program = random_program(seed)
    frames = random_frames(seed, program, 3)
    counts = Engine(program).run(frames, spike_counts=True).spike_counts
    assert counts is not None
    assert list(counts) == [layer.name for layer in program.layers[1:]]
    for index, layer in enumerate(program.layers[1:], start=1):
        outputs = to_akida(truncated(program, index)).forward(frames)
        expected = np.count_nonzero(outputs.reshape(len(frames), -1), axis=1)
        assert np.array_equal(counts[layer.name], expected), layer.name


def test_generated_cases_are_not_trivial() -> None:
    """Parity over all-zero outputs would prove little: most cases must vary."""
    varied = 0
    for seed in range(60):
        program = random_program(seed)
        outputs = Engine(program).run(random_frames(seed, program, 4)).outputs
        varied += len(np.unique(outputs)) > 1
    assert varied >= 40
