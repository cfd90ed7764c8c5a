"""Typed Python client of spikefleet-server.

with Client("server:7443", token=token, tls=ClientTLS(ca=Path("ca.pem"))) as client:
    info = client.convert("model.safetensors", name="digits", on_progress=print)
    signed = client.programs.get("digits")
"""

from spikefleet.client.agent import AgentClient, AsyncAgentClient
from spikefleet.client.aio import AsyncClient
from spikefleet.client.client import (
    Assignment,
    Client,
    ClientTLS,
    ConvertProgress,
    ProgramInfo,
    Programs,
)

__all__ = [
    "AgentClient",
    "Assignment",
    "AsyncAgentClient",
    "AsyncClient",
    "Client",
    "ClientTLS",
    "ConvertProgress",
    "ProgramInfo",
    "Programs",
]
