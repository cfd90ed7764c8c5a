"""The C kernels refuse buffers and tables that don't fit instead of reading
or writing outside them, and release the GIL so engines run in parallel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from generated import random_frames, random_program

from spikefleet.engine import Engine, _kernels
from spikefleet.engine.layers import ConvLayer
from spikefleet.errors import EngineError
from spikefleet.program.model import Convolutional, InputData, Padding, Program


def _conv_layer() -> ConvLayer:
    rng = np.random.default_rng(0)
    program = Program(
        "conv",
        [
            InputData("input", (6, 5, 3), 4),
            Convolutional("conv", rng.integers(-7, 8, (3, 3, 3, 4)).astype(np.int8),
                          np.zeros(4, np.int32), padding=Padding.SAME),
        ],
    )  # fmt: skip
    layer = Engine(program).layers[0]
    assert isinstance(layer, ConvLayer)
    return layer


def test_conv_tables_pointing_outside_the_weights_are_refused() -> None:
    layer = _conv_layer()
    tables = [layer.pixel_of, layer.channel_of, layer.starts, layer.outs, layer.tap_rows]
    _kernels.check_conv(layer.taps, *tables, layer.positions, layer.filters)
    for index, corrupt in [(3, 10**6), (4, layer.taps.size), (0, -1), (2, 7)]:
        bad = [table.copy() for table in tables]
        bad[index][-1] = corrupt
        with pytest.raises(ValueError, match="outside"):
            _kernels.check_conv(layer.taps, *bad, layer.positions, layer.filters)


def test_buffers_of_the_wrong_size_are_refused() -> None:
    layer = _conv_layer()
    tables = (layer.pixel_of, layer.channel_of, layer.starts, layer.outs, layer.tap_rows)
    frames = np.zeros((2, 6, 5, 3), np.uint8)
    short = np.empty((1, 6, 5, 4), np.int32)
    with pytest.raises(ValueError, match="output holds"):
        _kernels.conv(frames, layer.taps, short, None, 2, *tables, layer.positions, 4)
    with pytest.raises(ValueError, match="input holds"):
        _kernels.conv(frames[:1], layer.taps, short, None, 2, *tables, layer.positions, 4)
    weights = np.zeros((10, 4), np.int32)
    with pytest.raises(ValueError, match="weights hold"):
        _kernels.dense(np.zeros((1, 11), np.uint8), weights, np.empty((1, 4), np.int32), None,
                       1, 11, 4, False)  # fmt: skip
    with pytest.raises(ValueError, match="boundaries"):
        _kernels.dense(np.zeros((1, 10), np.uint8), weights, np.empty((1, 4), np.uint8),
                       np.zeros(3, np.int32), 1, 10, 4, False)  # fmt: skip


def test_peak_is_the_largest_byte() -> None:
    frames = np.zeros((3, 34, 34, 2), np.uint8)
    assert _kernels.peak(frames) == 0
    frames[2, 33, 33, 1] = 9
    frames[0, 0, 0, 0] = 4
    assert _kernels.peak(frames) == 9
    assert _kernels.peak(np.zeros(0, np.uint8)) == 0


def test_sums_that_could_leave_int32_are_refused_at_construction() -> None:
    channels = 20_500_000  # * 7 * 15 > 2**31
    weights = np.full((1, 1, channels, 1), 7, np.int8)
    program = Program(
        "huge",
        [InputData("input", (1, 1, channels), 4),
         Convolutional("conv", weights, np.zeros(1, np.int32), padding=Padding.VALID)],
    )  # fmt: skip
    with pytest.raises(EngineError, match="beyond int32"):
        Engine(program)


def test_engines_in_threads_give_the_same_outputs_as_one_thread() -> None:
    program = random_program(5)
    frames = random_frames(5, program, 64)
    engine = Engine(program)
    expected = engine.run(frames).outputs
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(engine.run(frames).outputs)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert all(np.array_equal(result, expected) for result in results)
