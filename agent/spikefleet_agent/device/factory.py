"""Pick a backend by name, as the agent config says."""

from __future__ import annotations

from typing import Any

from spikefleet.errors import AgentConfigError
from spikefleet_agent.device.base import Backend

BACKENDS = ("sim", "akida-sw", "akida-hw")


def open_backend(
    name: str, *, device: Any = None, device_index: int = 0, max_engine_bytes: int | None = None
) -> Backend:
    """``device`` overrides discovery for akida-hw (an already opened HardwareDevice);
    ``max_engine_bytes`` caps the memory of the sim engine's programs (None: default)."""
    if name == "sim":
        from spikefleet_agent.device.sim import SimBackend

        return SimBackend(max_engine_bytes)
    if name == "akida-sw":
        from spikefleet_agent.device.akida_sw import AkidaSoftwareBackend

        return AkidaSoftwareBackend()
    if name == "akida-hw":
        from spikefleet_agent.device.akida_hw import AkidaHardwareBackend, discover

        return AkidaHardwareBackend(device if device is not None else discover(device_index))
    raise AgentConfigError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
