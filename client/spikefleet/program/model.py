"""The domain types of an Akida 1.0 program: plain dataclasses over numpy arrays.

Arrays are stored exactly as BrainChip's ``akida`` engine holds the layer
variables, so a Program maps one to one onto an ``akida.Model``:

- ``Convolutional.weights``: int8, shape (kh, kw, in_channels, filters). Akida
  computes a true convolution, so this kernel is flipped relative to a torch
  ``Conv2d`` (a cross-correlation); the converter does that flip.
- ``FullyConnected.weights``: int8, shape (in_features, units). For an (H, W, C)
  input, element (h, w, c) meets row (c*W + w)*H + h (akida's Fortran order).
- ``threshold``: int32 per output; ``Activation.step``: float32 per output.

The program format (serialization) and the engine both work on these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from spikefleet.events.spec import InputSpec, default_input_spec

Int8Array: TypeAlias = npt.NDArray[np.int8]
Int32Array: TypeAlias = npt.NDArray[np.int32]
Float32Array: TypeAlias = npt.NDArray[np.float32]


class Padding(enum.Enum):
    SAME = "same"
    VALID = "valid"


class Pooling(enum.Enum):
    NONE = "none"
    MAX = "max"
    GLOBAL_AVERAGE = "global_average"


@dataclass(eq=False)
class Activation:
    """A quantized activation: 1 bit is a spike (potential > threshold)."""

    bits: int
    step: Float32Array


@dataclass(eq=False)
class InputData:
    """The input layer: frames of ``shape`` (H, W, C) with values below 2**bits."""

    name: str
    shape: tuple[int, int, int]
    bits: int = 4


@dataclass(eq=False)
class Convolutional:
    name: str
    weights: Int8Array
    threshold: Int32Array
    weights_bits: int = 4
    stride: int = 1
    padding: Padding = Padding.SAME
    pooling: Pooling = Pooling.NONE
    pool_size: int = 0
    pool_stride: int = 0
    activation: Activation | None = None

    @property
    def filters(self) -> int:
        return int(self.weights.shape[3])

    @property
    def kernel_size(self) -> tuple[int, int]:
        return int(self.weights.shape[0]), int(self.weights.shape[1])


@dataclass(eq=False)
class FullyConnected:
    name: str
    weights: Int8Array
    threshold: Int32Array
    weights_bits: int = 4
    activation: Activation | None = None

    @property
    def units(self) -> int:
        return int(self.weights.shape[1])


Layer: TypeAlias = InputData | Convolutional | FullyConnected


@dataclass
class Provenance:
    """Where a program came from; ``fidelity`` is the converter's report as JSON data."""

    source_sha256: str = ""
    converter_version: str = ""
    created: str = ""  # ISO 8601, UTC
    fidelity: dict[str, Any] | None = None


@dataclass
class HardwareParts:
    """BrainChip's own mapping of the program onto a device: the inputs of
    ``akida.HardwareDevice.program_external()``."""

    device: str  # e.g. "AKD1000"
    program_info: bytes
    program_data: bytes
    np_count: int = 0


@dataclass(eq=False)
class Program:
    """An Akida 1.0 network ready to run: ``layers[0]`` is always InputData."""

    name: str
    layers: list[Layer]
    labels: list[str] = field(default_factory=list)
    output_scales: Float32Array | None = None  # host-side dequant of the last layer
    provenance: Provenance = field(default_factory=Provenance)
    hardware: HardwareParts | None = None
    fbz: bytes | None = None  # the same network saved by akida, when available
    input_spec: InputSpec | None = None  # None: made before specs; see effective_input_spec

    @property
    def input(self) -> InputData:
        first = self.layers[0]
        assert isinstance(first, InputData)
        return first

    @property
    def effective_input_spec(self) -> InputSpec:
        """The recorded spec, or for programs without one the documented default
        (:func:`spikefleet.events.spec.default_input_spec`)."""
        if self.input_spec is not None:
            return self.input_spec
        return default_input_spec(self.input.shape, self.input.bits)
