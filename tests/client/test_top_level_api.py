"""The API a newcomer reaches for: ``spikefleet.Client`` and friends from the top level
(without making ``import spikefleet`` heavy), converting a live nn.Module, rollout
requests that insist on a sha256. Agents and assignments on the client:
tests/rollouts/test_rollout_identifiers.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from support.server import client_for

import spikefleet
from spikefleet.client.rollouts import RolloutRequest
from spikefleet.errors import RolloutSpecError, SpikefleetError
from spikefleet_server.app import ServerApp


def test_the_clients_come_from_the_top_level_and_load_only_when_used() -> None:
    script = (
        "import sys, spikefleet\n"
        "heavy = [m for m in ('grpc', 'torch') if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
        "from spikefleet import AgentClient, AsyncAgentClient, AsyncClient, Client, Engine\n"
        "assert 'torch' not in sys.modules\n"
        "assert Client.__module__ == 'spikefleet.client.client'\n"
        "assert AsyncAgentClient.__name__ == 'AsyncAgentClient'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert spikefleet.Client is spikefleet.client.Client
    assert {"Client", "AgentClient", "AsyncAgentClient", "AsyncClient"} <= set(spikefleet.__all__)


def test_client_converts_a_live_module_with_a_sample_input(server: ServerApp) -> None:
    import snntorch as snn
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.fc1 = nn.Linear(2 * 8 * 8, 16)
            self.lif1 = snn.Leaky(beta=0.0)
            self.fc2 = nn.Linear(16, 10)
            self.lif2 = snn.Leaky(beta=0.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            current = self.fc1(x.flatten(1))
            spikes, _ = self.lif1(current, torch.zeros_like(current))
            current = self.fc2(spikes)
            _, mem = self.lif2(current, torch.zeros_like(current))
            return mem

    with client_for(server, "deployer") as client:
        info = client.convert(TinyNet(), sample=torch.zeros(1, 2, 8, 8), hardware=False)
        assert info.name == "TinyNet" and info.version >= 1
        assert client.programs.resolve("TinyNet").sha256 == info.sha256
        with pytest.raises(SpikefleetError, match="needs sample"):
            client.convert(TinyNet())


def test_a_bundle_file_is_named_without_its_extensions(server: ServerApp, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "digits.bundle.safetensors"
    save_file(
        {
            "fc1.weight": rng.normal(0, 0.3, (10, 128)).astype(np.float32),
            "fc1.bias": np.zeros(10, np.float32),
        },
        str(path),
    )
    with client_for(server, "deployer") as client:
        info = client.convert(path, arch="Input(8,8,2) FC(10) Leaky", hardware=False)
    assert info.name == "digits"


def test_a_rollout_request_refuses_a_name_where_the_sha256_belongs() -> None:
    with pytest.raises(RolloutSpecError, match=r"programs.resolve"):
        RolloutRequest(program_sha256="digits")
    assert RolloutRequest(program_sha256="AB" * 32).program_sha256 == "ab" * 32
