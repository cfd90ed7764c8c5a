"""spikefleet: deploy SNNTorch spiking networks to BrainChip Akida.

The SDK holds the program format and signing, the bit-exact int4 engine, DVS
event handling and the gRPC clients::

    import spikefleet

    with spikefleet.Client("server:7443", token=token) as client:
        info = client.convert(model, sample=frames, name="digits")
    with spikefleet.AgentClient("127.0.0.1:50061") as agent:
        print(agent.infer(frame).classes)

Importing it never imports torch or gRPC: the clients, the engine and
``extract`` load on first use.
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
    from spikefleet.client.agent import AgentClient, AsyncAgentClient
    from spikefleet.client.aio import AsyncClient
    from spikefleet.client.client import Client, ClientTLS
    from spikefleet.convert.extraction import extract
    from spikefleet.engine import Engine

# name -> module it lives in; loaded on first use, so `import spikefleet` stays light
_LAZY = {
    "AgentClient": "spikefleet.client.agent",
    "AsyncAgentClient": "spikefleet.client.agent",
    "AsyncClient": "spikefleet.client.aio",
    "Client": "spikefleet.client.client",
    "ClientTLS": "spikefleet.client.client",
    "Engine": "spikefleet.engine",
    "extract": "spikefleet.convert.extraction",
}


def __getattr__(name: str) -> Any:
    """The clients need gRPC, ``extract`` needs torch: the package itself needs neither."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spikefleet' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AgentClient",
    "AsyncAgentClient",
    "AsyncClient",
    "Client",
    "ClientTLS",
    "ConversionError",
    "Engine",
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
