"""An Akida chip (AKD1000 on PCIe or USB) through ``akida.devices()``.

The device is programmed with the bytes BrainChip's mapper produced for it:
``Sequence.program`` equals ``program_info + program_data`` (measured with
akida 2.19.3), which is what ``HardwareDevice.program`` accepts. Power events
the SoC logs during inference go into telemetry.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

from spikefleet.errors import AkidaUnavailableError, DeviceError
from spikefleet.program.model import HardwareParts, Program
from spikefleet_agent.device.base import PowerSample, RunResult, check_frames, result_of

_POWER_BACKLOG = 4096


def discover(index: int = 0) -> Any:
    """The ``index``-th Akida hardware device, or DeviceError saying what to check."""
    try:
        import akida
    except ImportError as exc:
        raise AkidaUnavailableError("the akida-hw backend") from exc
    devices = akida.devices()
    if not devices:
        raise DeviceError(
            "no Akida hardware found (akida.devices() is empty): check the akida PCIe driver "
            'or the USB connection, or set backend = "sim" in the agent config'
        )
    if index >= len(devices):
        raise DeviceError(f"device_index {index} is out of range: {len(devices)} device(s) found")
    return devices[index]


class AkidaHardwareRunner:
    def __init__(self, backend: AkidaHardwareBackend, program: Program) -> None:
        self._backend = backend
        self._program = program

    def run(self, frames: np.ndarray, *, spike_counts: bool = False) -> RunResult:
        check_frames(self._program, frames)
        return self._backend.forward(self._program, frames)

    def close(self) -> None:
        pass


class AkidaHardwareBackend:
    """Owns one HardwareDevice; only one program is on the chip at a time."""

    name = "akida-hw"

    def __init__(self, device: Any, target: str = "AKD1000") -> None:
        self._device = device
        self.target = target
        self._lock = threading.Lock()
        self._loaded: Program | None = None
        self._power: deque[PowerSample] = deque(maxlen=_POWER_BACKLOG)
        soc = getattr(device, "soc", None)
        if soc is not None:
            soc.power_measurement_enabled = True

    def load(self, program: Program) -> AkidaHardwareRunner:
        parts = self._parts_for(program)
        with self._lock:
            self._device.program = parts.program_info + parts.program_data
            self._loaded = program
        return AkidaHardwareRunner(self, program)

    def forward(self, program: Program, frames: np.ndarray) -> RunResult:
        with self._lock:
            if self._loaded is not program:
                parts = self._parts_for(program)
                self._device.program = parts.program_info + parts.program_data
                self._loaded = program
            outputs = np.asarray(self._device.forward(frames))
            events = list(getattr(self._device, "inference_power_events", None) or [])
        now_ms = int(time.time() * 1000)
        for event in events:
            self._power.append(
                PowerSample(
                    unix_ms=int(getattr(event, "ts", now_ms)),
                    voltage_mv=float(event.voltage) / 1000.0,  # akida reports µV
                    current_ma=float(event.current),
                    power_mw=float(event.power),
                )
            )
        return result_of(program, outputs)

    def power_samples(self) -> list[PowerSample]:
        samples = []
        while self._power:
            samples.append(self._power.popleft())
        return samples

    def close(self) -> None:
        with self._lock:
            if self._loaded is not None:
                self._device.unprogram()
                self._loaded = None

    def _parts_for(self, program: Program) -> HardwareParts:
        if program.hardware is not None:
            return program.hardware
        from spikefleet.brainchip import map_hardware

        return map_hardware(program, device=self.target)
