"""spikefleet: deploy SNNTorch spiking networks to BrainChip Akida.

The SDK holds the program format and signing, the bit-exact int4 engine, DVS
event handling and the gRPC clients. Importing it never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from spikefleet.convert.extraction import extract


def __getattr__(name: str) -> Any:
    """``spikefleet.extract`` is loaded on first use: it needs torch, the package must not."""
    if name == "extract":
        from spikefleet.convert.extraction import extract

        return extract
    raise AttributeError(f"module 'spikefleet' has no attribute {name!r}")


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
    "extract",
]
