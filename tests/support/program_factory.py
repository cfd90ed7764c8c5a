"""Programs for the program-format tests: the reference network and generated ones."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from spikefleet.program import (
    Activation,
    Convolutional,
    FullyConnected,
    HardwareParts,
    InputData,
    Layer,
    Padding,
    Pooling,
    Program,
    Provenance,
)
from spikefleet.program.packing import weight_range
from spikefleet.program.shapes import output_shape


def random_weights(rng: np.random.Generator, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    low, high = weight_range(bits)
    return rng.integers(low, high + 1, size=shape).astype(np.int8)


def activation(rng: np.random.Generator, bits: int, outputs: int) -> Activation:
    return Activation(bits=bits, step=rng.uniform(0.0625, 4.0, outputs).astype(np.float32))


def reference_program(seed: int = 0) -> Program:
    """The reference network of DESIGN.md, with every optional part filled in."""
    rng = np.random.default_rng(seed)
    return Program(
        name="ndigits-reference",
        layers=[
            InputData("input", (34, 34, 2), 4),
            Convolutional(
                "conv1",
                random_weights(rng, 4, (3, 3, 2, 32)),
                rng.integers(-100, 100, 32).astype(np.int32),
                weights_bits=4,
                stride=2,
                activation=activation(rng, 1, 32),
            ),
            Convolutional(
                "conv2",
                random_weights(rng, 4, (3, 3, 32, 64)),
                rng.integers(-100, 100, 64).astype(np.int32),
                weights_bits=4,
                stride=2,
                pooling=Pooling.GLOBAL_AVERAGE,
                activation=activation(rng, 1, 64),
            ),
            FullyConnected(
                "fc",
                random_weights(rng, 4, (64, 10)),
                np.zeros(10, np.int32),
                weights_bits=4,
            ),
        ],
        labels=[str(digit) for digit in range(10)],
        output_scales=rng.uniform(0.001, 0.1, 10).astype(np.float32),
        provenance=Provenance(
            source_sha256="0f" * 32,
            converter_version="spikefleet 0.1.0",
            created="2026-11-27T00:00:00Z",
            fidelity={"top1_agreement": 0.97, "per_layer": [{"layer": "conv1", "mse": 0.01}]},
        ),
        hardware=HardwareParts("AKD1000", bytes(range(256)) * 2, b"\x00\x01" * 1000, 65),
        fbz=b"fake-but-opaque fbz bytes",
    )


@st.composite
def architectures(draw: st.DrawFn, max_channels: int = 16) -> Program:
    """Valid programs of 1-4 layers after the input, every layer option exercised."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    height = draw(st.integers(8, 24))
    width = draw(st.integers(8, 24))
    channels = draw(st.integers(1, 4))
    layers: list[Layer] = [
        InputData("input", (height, width, channels), draw(st.sampled_from([1, 2, 4])))
    ]
    shape = output_shape(layers[0], None)
    for index in range(draw(st.integers(1, 4))):
        bits = draw(st.sampled_from([1, 2, 4]))
        act = draw(st.sampled_from([None, 1, 2, 4]))
        if shape[0] >= 3 and shape[1] >= 3 and draw(st.booleans()):
            kernel = draw(st.sampled_from([k for k in (1, 3, 5) if k <= min(shape[0], shape[1])]))
            stride = draw(st.integers(1, min(2, kernel)))
            padding = draw(st.sampled_from([Padding.SAME, Padding.VALID]))
            pooling = draw(st.sampled_from([Pooling.NONE, Pooling.MAX, Pooling.GLOBAL_AVERAGE]))
            pool_size = pool_stride = 0
            if pooling is Pooling.MAX:
                pool_size = draw(st.integers(1, 3))
                pool_stride = draw(st.integers(1, pool_size))
            filters = draw(st.integers(1, max_channels))
            layer: Layer = Convolutional(
                f"conv{index}",
                random_weights(rng, bits, (kernel, kernel, shape[2], filters)),
                rng.integers(-200, 200, filters).astype(np.int32),
                weights_bits=bits,
                stride=stride,
                padding=padding,
                pooling=pooling,
                pool_size=pool_size,
                pool_stride=pool_stride,
                activation=None if act is None else activation(rng, act, filters),
            )
            try:
                next_shape = output_shape(layer, shape)
            except Exception:
                continue
        else:
            units = draw(st.integers(1, max_channels))
            layer = FullyConnected(
                f"fc{index}",
                random_weights(rng, bits, (shape[0] * shape[1] * shape[2], units)),
                rng.integers(-200, 200, units).astype(np.int32),
                weights_bits=bits,
                activation=None if act is None else activation(rng, act, units),
            )
            next_shape = (1, 1, units)
        layers.append(layer)
        shape = next_shape
        if act is None:
            break  # potentials end the network, as on akida
    if len(layers) == 1:
        units = 3
        layers.append(
            FullyConnected(
                "fc_out",
                random_weights(rng, 4, (shape[0] * shape[1] * shape[2], units)),
                np.zeros(units, np.int32),
            )
        )
        shape = (1, 1, units)
    outputs = shape[0] * shape[1] * shape[2]
    return Program(
        name=draw(st.text(max_size=20)),
        layers=layers,
        labels=draw(
            st.one_of(
                st.just([]), st.lists(st.text(max_size=8), min_size=outputs, max_size=outputs)
            )
        ),
        output_scales=draw(
            st.one_of(st.none(), st.just(rng.uniform(0, 1, shape[2]).astype(np.float32)))
        ),
        provenance=Provenance(
            source_sha256=draw(st.text(max_size=64)),
            converter_version=draw(st.text(max_size=10)),
            created=draw(st.text(max_size=25)),
            fidelity=draw(
                st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers()))
            ),
        ),
        hardware=draw(
            st.one_of(
                st.none(),
                st.builds(
                    HardwareParts,
                    st.text(max_size=8),
                    st.binary(max_size=64),
                    st.binary(max_size=64),
                    st.integers(0, 80),
                ),
            )
        ),
        fbz=draw(st.one_of(st.none(), st.binary(max_size=64))),
    )


def assert_programs_equal(a: Program, b: Program) -> None:
    """Every field equal, arrays equal in value, dtype and shape."""
    assert (a.name, a.labels, a.provenance, a.hardware, a.fbz, a.input_spec) == (
        b.name,
        b.labels,
        b.provenance,
        b.hardware,
        b.fbz,
        b.input_spec,
    )
    _arrays_equal(a.output_scales, b.output_scales)
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers, strict=True):
        assert type(x) is type(y)
        for field in vars(x):
            left, right = getattr(x, field), getattr(y, field)
            if isinstance(left, Activation) or isinstance(right, Activation):
                assert isinstance(left, Activation) and isinstance(right, Activation)
                assert left.bits == right.bits
                _arrays_equal(left.step, right.step)
            elif isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
                _arrays_equal(left, right)
            else:
                assert left == right, (x.name, field, left, right)


def _arrays_equal(a: np.ndarray | None, b: np.ndarray | None) -> None:
    if a is None or b is None:
        assert a is None and b is None
        return
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b)


def spiking_reference_program(seed: int = 0) -> Program:
    """The reference topology with 1-bit (spiking) activations and modest thresholds:
    what converted programs look like (the CLI and BrainChip bridge tests run it)."""
    rng = np.random.default_rng(seed)

    def spikes(n: int) -> Activation:
        return Activation(1, np.ones(n, np.float32))

    return Program(
        name="reference",
        layers=[
            InputData("input", (34, 34, 2), 4),
            Convolutional(
                "conv1",
                rng.integers(-7, 8, (3, 3, 2, 32)).astype(np.int8),
                rng.integers(0, 40, 32).astype(np.int32),
                stride=2,
                activation=spikes(32),
            ),
            Convolutional(
                "conv2",
                rng.integers(-7, 8, (3, 3, 32, 64)).astype(np.int8),
                rng.integers(0, 300, 64).astype(np.int32),
                stride=2,
                pooling=Pooling.GLOBAL_AVERAGE,
                activation=spikes(64),
            ),
            FullyConnected(
                "fc", rng.integers(-7, 8, (64, 10)).astype(np.int8), np.zeros(10, np.int32)
            ),
        ],
    )


def small_program(seed: int, name: str) -> Program:
    """A tiny valid program; different seeds give different bytes (and sha256)."""
    rng = np.random.default_rng(seed)
    return Program(
        name=name,
        layers=[
            InputData("input", (8, 8, 2), 4),
            Convolutional(
                "conv",
                rng.integers(-7, 8, size=(3, 3, 2, 4)).astype(np.int8),
                rng.integers(0, 8, 4).astype(np.int32),
                activation=Activation(1, np.ones(4, np.float32)),
            ),
            FullyConnected(
                "fc", rng.integers(-7, 8, size=(256, 10)).astype(np.int8), np.zeros(10, np.int32)
            ),
        ],
        labels=[str(d) for d in range(10)],
    )


def huge_input_program() -> Program:
    """Input(20000,20000,2) and two tiny layers: about 1 kB, gigabytes in the engine."""
    return Program(
        "huge-input",
        [
            InputData("input", (20000, 20000, 2), 1),
            Convolutional(
                "conv",
                np.ones((3, 3, 2, 4), np.int8),
                np.ones(4, np.int32),
                pooling=Pooling.GLOBAL_AVERAGE,
                activation=Activation(1, np.ones(4, np.float32)),
            ),
            FullyConnected("fc", np.ones((4, 10), np.int8), np.ones(10, np.int32)),
        ],
    )
