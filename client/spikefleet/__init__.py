"""spikefleet: deploy SNNTorch spiking networks to BrainChip Akida.

The SDK holds the program format and signing, the bit-exact int4 engine, DVS
event handling and the gRPC clients. Importing it never imports torch.
"""

from __future__ import annotations

from spikefleet.errors import (
    ConversionError,
    EngineError,
    EventFormatError,
    FrameError,
    IncompatibleModelError,
    ProgramFormatError,
    SignatureError,
    SpikefleetError,
)

__version__ = "0.1.0"

__all__ = [
    "ConversionError",
    "EngineError",
    "EventFormatError",
    "FrameError",
    "IncompatibleModelError",
    "ProgramFormatError",
    "SignatureError",
    "SpikefleetError",
    "__version__",
]
