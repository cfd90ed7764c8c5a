"""The C kernels refuse buffers and tables that don't fit instead of reading
or writing outside them, and release the GIL so engines run in parallel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support.generated import random_frames, random_program

from spikefleet.engine import Engine, _kernels
from spikefleet.engine.layers import ConvKernel, conv_tables
from spikefleet.errors import EngineError
from spikefleet.program.model import Convolutional, InputData, Padding, Program


def _tables() -> dict[str, np.ndarray]:
    """A 2x2 Valid convolution of a 3x3x2 input: 4 positions, 4 taps each."""
    weights = np.arange(4 * 2 * 3, dtype=np.int32).reshape(4, 2, 3)
    oy, ox, i, j = np.meshgrid(*(np.arange(2),) * 4, indexing="ij")
    return conv_tables(
        weights,
        2,
        pair_position=(oy * 2 + ox).ravel(),
        pair_pixel=((oy + i) * 3 + ox + j).ravel(),
        pair_tap=(i * 2 + j).ravel(),
        positions=4,
        pixels=9,
    )


def _compile(tables: dict[str, np.ndarray], boundaries: np.ndarray | None = None) -> ConvKernel:
    return ConvKernel(
        tables,
        positions=4,
        filters=3,
        boundaries=boundaries,
        binary=False,
        saturate=False,
        narrow=False,
    )


def test_the_kernel_computes_a_convolution() -> None:
    kernel = _compile(_tables())
    x = np.random.default_rng(0).integers(0, 16, (5, 3, 3, 2)).astype(np.uint8)
    out = np.empty((5, 2, 2, 3), np.int32)
    kernel.run(x, out, activate=False)
    weights = np.arange(24).reshape(2, 2, 2, 3)
    for oy in range(2):
        for ox in range(2):
            window = x[:, oy : oy + 2, ox : ox + 2].astype(np.int64)
            expected = np.einsum("nijc,ijcf->nf", window, weights)
            assert np.array_equal(out[:, oy, ox], expected)


@pytest.mark.parametrize(
    ("table", "corrupt"),
    [("pair_tap", 10**6), ("read_out", 10**6), ("pair_pixel", 9), ("pixel_of", -1),
     ("pair_start", 99), ("read_tap", -8)],
)  # fmt: skip
def test_tables_pointing_outside_their_arrays_are_refused(table: str, corrupt: int) -> None:
    tables = _tables()
    _compile(tables)
    tables[table] = tables[table].copy()
    tables[table][-1] = corrupt
    with pytest.raises(ValueError, match="outside"):
        _compile(tables)


def test_buffers_of_the_wrong_size_are_refused() -> None:
    kernel = _compile(_tables(), boundaries=np.zeros((1, 3), np.int32))
    frames = np.zeros((2, 3, 3, 2), np.uint8)
    with pytest.raises(ValueError, match="output holds"):
        kernel.run(frames, np.empty((1, 2, 2, 3), np.int32), activate=False)
    with pytest.raises(ValueError, match="input holds"):
        kernel.run(frames[:, :2], np.empty((2, 2, 2, 3), np.int32), activate=False)
    with pytest.raises(ValueError, match="output holds"):
        kernel.run(frames, np.empty((2, 2, 2, 3), np.int32), activate=True)  # levels are bytes
    with pytest.raises(ValueError, match="no activation"):
        _compile(_tables()).run(frames, np.empty((2, 2, 2, 3), np.uint8), activate=True)


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
        Engine(program, max_engine_bytes=0)  # past the memory cap too: this is about int32


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
