"""Exclusive device ownership: two agents never hold the same device."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spikefleet.errors import DeviceBusyError
from spikefleet_agent.device.lock import DeviceLock

HOLD = """
import sys, time
from pathlib import Path
from spikefleet_agent.device.lock import DeviceLock
DeviceLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_owner_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    path = tmp_path / "akida-0.lock"
    with DeviceLock(path), pytest.raises(DeviceBusyError, match=f"pid {os.getpid()}"):
        DeviceLock(path).acquire()


def test_released_lock_can_be_taken_again(tmp_path: Path) -> None:
    path = tmp_path / "akida-0.lock"
    DeviceLock(path).acquire().release()
    DeviceLock(path).acquire().release()


def test_lock_held_by_another_process_dies_with_it(tmp_path: Path) -> None:
    path = tmp_path / "akida-0.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DeviceBusyError, match=str(holder.pid)):
            DeviceLock(path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        DeviceLock(path).acquire().release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_second_sim_agent_on_the_same_lock_dir_and_device_is_refused(tmp_path: Path) -> None:
    from support.agent import make_key

    from spikefleet_agent.config import AgentConfig, InferenceConfig, TelemetryConfig
    from spikefleet_agent.daemon import Agent

    make_key(tmp_path / "keys")

    def agent(name: str, device_index: int = 0) -> Agent:
        config = AgentConfig(
            agent_id=name,
            backend="sim",
            device_index=device_index,
            state_dir=tmp_path / name,
            lock_dir=tmp_path / "locks",
            trusted_keys=[tmp_path / "keys"],
            inference=InferenceConfig(address="127.0.0.1:0"),
            telemetry=TelemetryConfig(interval_s=3600),
        ).validate()
        return Agent(config, pci_root=tmp_path / "no-sysfs")

    first = agent("one").start()
    try:
        with pytest.raises(DeviceBusyError, match=r"sim-0\.lock is locked by pid"):
            agent("two").start()
        other_device = agent("three", device_index=1).start()
        other_device.stop()
    finally:
        first.stop()
