"""Device backends (sim, akida-sw, akida-hw), inventory and exclusive ownership."""

from spikefleet_agent.device.base import Backend, PowerSample, Runner, RunResult, check_frames
from spikefleet_agent.device.factory import BACKENDS, open_backend

__all__ = [
    "BACKENDS",
    "Backend",
    "PowerSample",
    "RunResult",
    "Runner",
    "check_frames",
    "open_backend",
]
