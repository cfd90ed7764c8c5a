"""Engine behaviour beyond parity: input checks, predict, spike counts, big batches."""

from __future__ import annotations

import re

import numpy as np
import pytest
from support.generated import random_frames, random_program

from spikefleet.brainchip import to_akida
from spikefleet.engine import Engine
from spikefleet.engine.engine import CHUNK
from spikefleet.engine.layers import ConvLayer
from spikefleet.errors import FrameError, SpikefleetError
from spikefleet.program.model import (
    Activation,
    Convolutional,
    FullyConnected,
    InputData,
    Padding,
    Pooling,
    Program,
)


def reference_network(seed: int = 0, scales: bool = True) -> Program:
    """The reference architecture of DESIGN.md with random int4 parameters."""
    rng = np.random.default_rng(seed)

    def weights(shape: tuple[int, ...]) -> np.ndarray:
        return rng.integers(-7, 8, size=shape).astype(np.int8)

    def spike(filters: int) -> Activation:
        return Activation(1, np.ones(filters, np.float32))

    return Program(
        name="reference",
        layers=[
            InputData("input", (34, 34, 2), 4),
            Convolutional(
                "conv1",
                weights((3, 3, 2, 32)),
                rng.integers(0, 40, 32).astype(np.int32),
                stride=2,
                activation=spike(32),
            ),
            Convolutional(
                "conv2",
                weights((3, 3, 32, 64)),
                rng.integers(-50, 400, 64).astype(np.int32),
                stride=2,
                pooling=Pooling.GLOBAL_AVERAGE,
                activation=spike(64),
            ),
            FullyConnected("fc", weights((64, 10)), np.zeros(10, np.int32)),
        ],
        labels=[str(d) for d in range(10)],
        output_scales=rng.uniform(0.01, 1.0, 10).astype(np.float32) if scales else None,
    )


def dvs_frames(count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (count, 34, 34, 2)
    return np.where(rng.random(shape) < 0.1, rng.integers(1, 16, shape), 0).astype(np.uint8)


def test_reference_network_matches_akida_and_predict_uses_output_scales() -> None:
    program = reference_network()
    frames = dvs_frames(32)
    expected = to_akida(program).forward(frames)
    engine = Engine(program)
    assert np.array_equal(engine.run(frames).outputs, expected)
    assert program.output_scales is not None
    scaled = expected.reshape(32, -1) * program.output_scales
    assert np.array_equal(engine.predict(frames), np.argmax(scaled, axis=1))
    assert engine.predict(frames).dtype == np.int64


def test_predict_without_scales_is_argmax_of_outputs() -> None:
    program = reference_network(scales=False)
    frames = dvs_frames(16, seed=5)
    outputs = Engine(program).run(frames).outputs
    assert np.array_equal(Engine(program).predict(frames), outputs.reshape(16, -1).argmax(1))


def test_batches_larger_than_a_chunk_equal_frame_by_frame_runs() -> None:
    program = random_program(7)
    frames = random_frames(7, program, CHUNK + 3)
    engine = Engine(program)
    whole = engine.run(frames, spike_counts=True)
    singles = [engine.run(frames[i : i + 1], spike_counts=True) for i in (0, CHUNK, CHUNK + 2)]
    for single, index in zip(singles, (0, CHUNK, CHUNK + 2), strict=True):
        assert np.array_equal(single.outputs[0], whole.outputs[index])
        assert whole.spike_counts is not None and single.spike_counts is not None
        for name, counts in single.spike_counts.items():
            assert counts[0] == whole.spike_counts[name][index]


def test_empty_batch_gives_empty_outputs() -> None:
    engine = Engine(reference_network())
    result = engine.run(np.zeros((0, 34, 34, 2), np.uint8))
    assert result.outputs.shape == (0, 1, 1, 10)
    assert result.spike_counts is None


def test_one_frame_is_a_batch_of_one_as_the_agent_client_takes_it() -> None:
    engine = Engine(reference_network())
    frame = np.random.default_rng(3).integers(0, 16, (34, 34, 2), dtype=np.uint8)
    single = engine.run(frame)
    assert single.outputs.shape == (1, 1, 1, 10)
    assert np.array_equal(single.outputs, engine.run(frame[None]).outputs)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((34, 34, 3), np.uint8), re.escape("or one frame (34, 34, 2)")),
        (np.zeros((1, 34, 34, 3), np.uint8), re.escape("expected (N, 34, 34, 2)")),
        (np.zeros((1, 34, 34, 2), np.int32), "must be uint8"),
        (np.full((1, 34, 34, 2), 16, np.uint8), "4-bit input"),
        ([[0]], "numpy array"),
    ],
)
def test_bad_frames_raise_frame_error_naming_the_problem(frames: object, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        Engine(reference_network()).run(frames)  # type: ignore[arg-type]


def test_activation_step_below_one_sixteenth_is_refused_like_akida() -> None:
    program = reference_network()
    conv1 = program.layers[1]
    assert isinstance(conv1, Convolutional) and conv1.activation is not None
    conv1.activation = Activation(2, np.full(32, 0.05, np.float32))
    with pytest.raises(SpikefleetError, match="1/16"):
        Engine(program)


def test_invalid_program_is_refused_at_construction() -> None:
    program = reference_network()
    program.layers[1] = Convolutional(
        "conv1", np.zeros((3, 3, 5, 32), np.int8), np.zeros(32, np.int32), padding=Padding.SAME
    )
    with pytest.raises(Exception, match="input channels"):
        Engine(program)


def _wide_program(layer: Convolutional | FullyConnected, shape: tuple[int, int, int]) -> Program:
    return Program(name="wide", layers=[InputData("input", shape, 4), layer])


def _half_and_half(channels: int, filters: int = 2) -> np.ndarray:
    """+7 weights on the first half of the channels, -7 on the rest (filter 1: negated)."""
    weights = np.full((channels, filters), 7, np.int8)
    weights[channels // 2 :, 0] = -7
    weights[: channels // 2, 1] = -7
    return weights


def _saturation_frames(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.full((4, *shape), 15, np.uint8)
    frames[1, ..., shape[2] // 2 :] = 0
    frames[2, ..., : shape[2] // 2] = 0
    frames[3] = rng.integers(0, 16, shape)
    return frames


@pytest.mark.parametrize(
    "kind", ["dense", "conv", "conv-max", "conv-max-act", "conv-gap", "conv-gap-act"]
)
def test_potentials_beyond_20_bits_saturate_like_akida(kind: str) -> None:
    """Sums beyond 2**19 saturate in FC, max-pooled and global-pooled layers (a
    running 20-bit sum over positions for the latter) but not in a plain conv."""
    channels = 16000
    side = 1 if kind == "dense" else 2
    shape = (side, side, channels)
    weights = _half_and_half(channels)
    activation = Activation(1, np.ones(2, np.float32)) if kind.endswith("act") else None
    threshold = np.array([600000, -600000], np.int32)
    layer: Convolutional | FullyConnected
    if kind == "dense":
        layer = FullyConnected("fc", weights, threshold, activation=activation)
    else:
        pooling = Pooling.NONE
        if "max" in kind:
            pooling = Pooling.MAX
        elif "gap" in kind:
            pooling = Pooling.GLOBAL_AVERAGE
        layer = Convolutional(
            "conv",
            weights.reshape(1, 1, channels, 2),
            threshold,
            padding=Padding.VALID,
            pooling=pooling,
            pool_size=2 if pooling is Pooling.MAX else 0,
            pool_stride=2 if pooling is Pooling.MAX else 0,
            activation=activation,
        )
    program = _wide_program(layer, shape)
    frames = _saturation_frames(shape, seed=len(kind))
    if kind == "conv-gap":
        frames[0, 0, 1] = 0  # positions of both signs: a running sum differs from a clip
        frames[0, 1, 1, : channels // 2] = 0
    expected = to_akida(program).forward(frames)
    assert np.array_equal(Engine(program).run(frames).outputs, expected)
    if kind == "conv":
        assert int(np.abs(expected).max()) > 2**19
    elif activation is None:
        assert int(expected.max()) == 2**19 - 1
        assert int(expected.min()) == -(2**19)


def test_sums_beyond_float32_precision_stay_exact() -> None:
    """A plain conv does not saturate: sums beyond 2**24 stay exact in int32."""
    channels = 16000
    weights = np.broadcast_to(_half_and_half(channels), (5, 5, channels, 2)).copy()
    layer = Convolutional("conv", weights, np.zeros(2, np.int32), padding=Padding.VALID)
    program = _wide_program(layer, (5, 5, channels))
    frames = _saturation_frames((5, 5, channels), seed=11)
    frames[1, 0, 0, 0] = 14  # 42,000,000 - 7: odd, which float32 cannot hold
    expected = to_akida(program).forward(frames)
    assert int(np.abs(expected).max()) > 2**24
    assert np.array_equal(Engine(program).run(frames).outputs, expected)


def _gap_program(kernel: int, stride: int, filters: int, padding: Padding) -> Program:
    rng = np.random.default_rng(kernel * 100 + stride * 10 + filters)
    return Program(
        name="gap",
        layers=[
            InputData("input", (12, 11, 3), 4),
            Convolutional(
                "conv",
                rng.integers(-7, 8, (kernel, kernel, 3, filters)).astype(np.int8),
                rng.integers(-200, 200, filters).astype(np.int32),
                stride=stride,
                padding=padding,
                pooling=Pooling.GLOBAL_AVERAGE,
                activation=Activation(4, rng.uniform(0.5, 30, filters).astype(np.float32)),
            ),
        ],
    )


def test_global_pooling_folds_input_positions_into_weight_classes_exactly() -> None:
    """A global-pooled conv adds each input position's (C, F) block of weights to
    the pooled sum; positions with the same block share a class. Few classes
    (stride 2, Same) and one class per position (5x5 Valid) must both equal
    akida on sparse and dense frames."""
    few = _gap_program(3, 2, 16, Padding.SAME)
    many = _gap_program(5, 1, 1, Padding.VALID)
    classes = []
    for program in (few, many):
        engine = Engine(program)
        layer = engine.layers[0]
        assert isinstance(layer, ConvLayer) and layer.classes is not None
        classes.append(int(layer.classes.max()) + 1)
        frames = random_frames(3, program, 6)
        frames[4:] = np.random.default_rng(4).integers(0, 16, frames[4:].shape)
        expected = to_akida(program).forward(frames)
        assert np.array_equal(engine.run(frames).outputs, expected)
    assert classes[0] < 12 * 11 // 4
    assert classes[1] > 12 * 11 // 2


@pytest.mark.parametrize("batch", [1, 7])
def test_sparse_and_empty_frames_are_exact(batch: int) -> None:
    """The kernels visit only non-zero inputs: a big FullyConnected on
    mostly-zero input, and frames without any input, must equal akida."""
    rng = np.random.default_rng(batch)
    program = Program(
        name="sparse",
        layers=[
            InputData("input", (32, 32, 4), 4),
            FullyConnected(
                "fc",
                rng.integers(-7, 8, (4096, 24)).astype(np.int8),
                np.zeros(24, np.int32),
            ),
        ],
    )
    shape = (batch, 32, 32, 4)
    frames = np.where(rng.random(shape) < 0.004, rng.integers(1, 16, shape), 0).astype(np.uint8)
    if batch > 1:
        frames[2] = 0
        frames[-1] = 0
    expected = to_akida(program).forward(frames)
    assert np.array_equal(Engine(program).run(frames).outputs, expected)
