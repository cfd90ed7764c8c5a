"""Akida 1.0 programs: domain types, serialization and signing."""

from spikefleet.program.model import (
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
from spikefleet.program.shapes import layer_output_shapes
from spikefleet.program.validate import validate

__all__ = [
    "Activation",
    "Convolutional",
    "FullyConnected",
    "HardwareParts",
    "InputData",
    "Layer",
    "Padding",
    "Pooling",
    "Program",
    "Provenance",
    "layer_output_shapes",
    "validate",
]
