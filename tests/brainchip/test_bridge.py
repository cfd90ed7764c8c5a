"""The akida bridge: Program <-> akida.Model, .fbz files, AKD1000 mapping."""

from __future__ import annotations

from pathlib import Path

import akida
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.generated import random_frames, random_program
from support.program_factory import spiking_reference_program

from spikefleet.brainchip import from_akida, load_fbz, map_hardware, save_fbz, to_akida
from spikefleet.engine import Engine
from spikefleet.errors import HardwareMappingError, ProgramFormatError, UnsupportedLayerError
from spikefleet.program.model import (
    Activation,
    Convolutional,
    FullyConnected,
    InputData,
    Padding,
    Program,
)


def assert_same_layers(left: Program, right: Program) -> None:
    assert len(left.layers) == len(right.layers)
    for a, b in zip(left.layers, right.layers, strict=True):
        assert type(a) is type(b)
        assert a.name == b.name
        if isinstance(a, InputData):
            assert isinstance(b, InputData)
            assert tuple(a.shape) == tuple(b.shape) and a.bits == b.bits
            continue
        assert isinstance(b, Convolutional | FullyConnected)
        assert a.weights.dtype == b.weights.dtype and np.array_equal(a.weights, b.weights)
        assert np.array_equal(a.threshold, b.threshold)
        assert a.weights_bits == b.weights_bits
        if a.activation is None:
            assert b.activation is None
        else:
            assert b.activation is not None
            assert a.activation.bits == b.activation.bits
            assert np.array_equal(a.activation.step, b.activation.step)
        if isinstance(a, Convolutional):
            assert isinstance(b, Convolutional)
            assert (a.stride, a.padding, a.pooling) == (b.stride, b.padding, b.pooling)
            assert (a.pool_size, a.pool_stride) == (b.pool_size, b.pool_stride)


@settings(max_examples=30, derandomize=True, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_program_to_akida_and_back_is_identical(seed: int) -> None:
    program = random_program(seed)
    assert_same_layers(program, from_akida(to_akida(program)))


@settings(max_examples=15, derandomize=True, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_fbz_round_trip_keeps_layers_and_outputs(
    seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    program = random_program(seed)
    path = tmp_path_factory.mktemp("fbz") / "model.fbz"
    save_fbz(program, path)
    loaded = load_fbz(path)
    assert loaded.fbz == path.read_bytes()
    assert loaded.name == program.name  # travels in the trailer, whatever the file name
    assert_same_layers(program, loaded)
    frames = random_frames(seed, program, 3)
    expected = akida.Model(str(path)).forward(frames)
    assert np.array_equal(Engine(loaded).run(frames).outputs, expected)


def test_reference_network_maps_onto_65_nps_of_an_akd1000() -> None:
    parts = map_hardware(spiking_reference_program())
    assert parts.device == "AKD1000"
    assert parts.np_count == 65
    assert len(parts.program_info) > 0 and len(parts.program_data) > 100_000


def test_valid_padding_does_not_map_and_says_why() -> None:
    program = spiking_reference_program()
    conv1 = program.layers[1]
    assert isinstance(conv1, Convolutional)
    conv1.padding = Padding.VALID
    with pytest.raises(HardwareMappingError, match="Only padding same is supported"):
        map_hardware(program)


def test_a_layer_too_big_for_a_cnp_does_not_fit() -> None:
    rng = np.random.default_rng(0)
    program = Program(
        name="too-big",
        layers=[
            InputData("input", (16, 16, 1024), 4),
            Convolutional(
                "huge",
                rng.integers(-7, 8, (3, 3, 1024, 1024)).astype(np.int8),
                np.zeros(1024, np.int32),
                activation=Activation(4, np.ones(1024, np.float32)),
            ),
            FullyConnected("fc", np.ones((16 * 16 * 1024, 2), np.int8), np.zeros(2, np.int32)),
        ],
    )
    with pytest.raises(HardwareMappingError, match="does not map onto AKD1000"):
        map_hardware(program)


def test_unknown_device_is_refused() -> None:
    with pytest.raises(HardwareMappingError, match="unknown device 'AKD9000'"):
        map_hardware(spiking_reference_program(), device="AKD9000")


def test_unsupported_akida_layer_is_named_with_its_type() -> None:
    model = akida.Model()
    model.add(akida.InputData((16, 16, 2), input_bits=4, name="events"))
    model.add(akida.SeparableConvolutional(kernel_size=(3, 3), filters=8, name="sep"))
    with pytest.raises(UnsupportedLayerError, match="'sep' of type SeparableConvolutional"):
        from_akida(model)


def test_unsupported_first_layer_is_named() -> None:
    model = akida.Model()
    model.add(akida.InputConvolutional((16, 16, 1), kernel_size=(3, 3), filters=8, name="stem"))
    with pytest.raises(UnsupportedLayerError, match="'stem' of type InputConvolutional"):
        from_akida(model)


def test_corrupt_or_missing_fbz_raises_program_format_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.fbz"
    bad.write_bytes(b"not a model")
    with pytest.raises(ProgramFormatError, match="not an akida model file"):
        load_fbz(bad)
    with pytest.raises(ProgramFormatError, match="cannot read"):
        load_fbz(tmp_path / "missing.fbz")
