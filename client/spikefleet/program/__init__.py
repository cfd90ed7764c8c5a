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
]
