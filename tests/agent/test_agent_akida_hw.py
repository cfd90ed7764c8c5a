"""The akida-hw backend against a stand-in HardwareDevice (there is no chip here).

The stand-in has the attributes of akida.HardwareDevice the backend uses:
``program`` (set with program bytes), ``forward``, ``inference_power_events``,
``soc`` and ``unprogram``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from support.agent import make_program, random_frames

from spikefleet.client.agent import AgentClient
from spikefleet.errors import FrameError
from spikefleet.program.model import HardwareParts, Program
from spikefleet_agent.daemon import Agent
from spikefleet_agent.device.akida_hw import AkidaHardwareBackend


class StandInDevice:
    def __init__(self) -> None:
        self.soc = SimpleNamespace(power_measurement_enabled=False)
        self.programmed: list[bytes] = []
        self.inference_power_events: list[Any] = []
        self.forwarded: list[np.ndarray] = []
        self.unprogrammed = 0

    @property
    def program(self) -> bytes | None:
        return self.programmed[-1] if self.programmed else None

    @program.setter
    def program(self, data: bytes) -> None:
        self.programmed.append(data)

    def forward(self, frames: np.ndarray) -> np.ndarray:
        self.forwarded.append(frames)
        # potentials that depend on the input: class k gets the count of value k+1
        counts = np.stack([(frames == k + 1).sum(axis=(1, 2, 3)) for k in range(10)], axis=1)
        self.inference_power_events = [
            SimpleNamespace(ts=1_700_000_000_000, voltage=900_000, current=120.0, power=108.0)
        ]
        return counts.astype(np.int32).reshape(len(frames), 1, 1, 10)

    def unprogram(self) -> None:
        self.unprogrammed += 1


def program_with_parts() -> Program:
    program = make_program(1)
    program.hardware = HardwareParts("AKD1000", b"INFO" * 10, b"DATA" * 100, 65)
    return program


def test_device_is_programmed_with_info_then_data_and_power_metering_on() -> None:
    device = StandInDevice()
    backend = AkidaHardwareBackend(device)
    assert device.soc.power_measurement_enabled
    backend.load(program_with_parts())
    assert device.programmed == [b"INFO" * 10 + b"DATA" * 100]


def test_forward_runs_on_the_device_and_classes_come_from_its_outputs() -> None:
    device = StandInDevice()
    runner = AkidaHardwareBackend(device).load(program_with_parts())
    frames = random_frames(4, seed=3)
    result = runner.run(frames)
    np.testing.assert_array_equal(device.forwarded[0], frames)
    expected = np.stack([(frames == k + 1).sum(axis=(1, 2, 3)) for k in range(10)], axis=1)
    np.testing.assert_array_equal(result.classes, expected.argmax(axis=1))
    np.testing.assert_allclose(result.scores, expected * 0.5)


def test_power_events_become_telemetry_samples_in_milliwatts_and_millivolts() -> None:
    device = StandInDevice()
    backend = AkidaHardwareBackend(device)
    backend.load(program_with_parts()).run(random_frames(1))
    (sample,) = backend.power_samples()
    assert (sample.voltage_mv, sample.current_ma, sample.power_mw) == (900.0, 120.0, 108.0)
    assert backend.power_samples() == []


def test_bad_frames_never_reach_the_device() -> None:
    device = StandInDevice()
    runner = AkidaHardwareBackend(device).load(program_with_parts())
    with pytest.raises(FrameError, match=r"0\.\.15"):
        runner.run(np.full((1, 34, 34, 2), 16, np.uint8))
    with pytest.raises(FrameError, match="shape"):
        runner.run(np.zeros((1, 28, 28, 1), np.uint8))
    assert device.forwarded == []


def test_switching_programs_reprograms_the_chip_and_close_unprograms() -> None:
    device = StandInDevice()
    backend = AkidaHardwareBackend(device)
    first = backend.load(program_with_parts())
    second_program = program_with_parts()
    second_program.hardware = HardwareParts("AKD1000", b"I2", b"D2", 65)
    backend.load(second_program)
    first.run(random_frames(1))  # the shadow/previous program still runs: chip reprogrammed
    assert device.programmed[-1] == b"INFO" * 10 + b"DATA" * 100
    backend.close()
    assert device.unprogrammed == 1


def test_an_agent_on_akida_hw_serves_from_the_chip_and_reports_its_power(
    standalone_agent: Callable[..., Agent],
) -> None:
    device = StandInDevice()
    program = make_program(1)  # no hardware parts: the agent maps it with akida for AKD1000
    agent = standalone_agent(program, backend="akida-hw", hardware_device=device)
    frames = random_frames(6, seed=2)
    with AgentClient(f"127.0.0.1:{agent.inference_port}") as client:
        prediction = client.infer(frames)
    expected = np.stack([(frames == k + 1).sum(axis=(1, 2, 3)) for k in range(10)], axis=1)
    np.testing.assert_array_equal(prediction.classes, expected.argmax(axis=1))
    assert len(device.programmed) == 1 and len(device.programmed[0]) > 1000
    assert (agent.config.lock_dir / "akida-0.lock").exists()  # the device is owned
    seq = agent.flush_telemetry()
    (batch,) = agent.spool.pending(seq - 1)
    assert batch.backend == "akida-hw"
    assert [(p.voltage_mv, p.power_mw) for p in batch.power] == [(900.0, 108.0)]
