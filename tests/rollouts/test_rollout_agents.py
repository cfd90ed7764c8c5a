"""Rollouts with real spikefleet-agent processes: shadow agreement measured on live input."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rollout_helpers import client, final
from rollout_processes import AgentProcess, free_port, start_server
from support.program_factory import small_program
from support.server import TOKENS, running_app
from support.waiting import wait_for

from spikefleet.client.agent import AgentClient
from spikefleet.client.rollouts import RolloutRequest
from spikefleet.errors import SpikefleetError
from spikefleet.program.codec import encode
from spikefleet_server.keys import load_or_create


def feed(addresses: list[str], stop: threading.Event) -> None:
    """Live input: random sparse 4-bit frames to every agent until stopped."""
    rng = np.random.default_rng(0)
    clients = [AgentClient(address) for address in addresses]
    while not stop.is_set():
        frames = rng.integers(0, 16, size=(8, 8, 8, 2)).astype(np.uint8)
        frames[rng.random(frames.shape) > 0.3] = 0
        for agent in clients:
            with contextlib.suppress(SpikefleetError):  # no program yet
                agent.infer(frames)
        stop.wait(0.02)
    for agent in clients:
        agent.close()


@pytest.mark.slow
def test_real_agents_shadow_a_candidate_and_only_an_agreeing_one_is_rolled_out(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "server"
    with running_app(data_dir) as app:
        put = app.registry.put
        base = small_program(7, "base")
        sha = {
            "base": put(encode(base), name="base").sha256,
            # the same network under another name: other bytes, identical predictions
            "same": put(encode(small_program(7, "same")), name="same").sha256,
            "other": put(encode(small_program(8, "other")), name="other").sha256,
        }
    keys = tmp_path / "trusted"
    keys.mkdir()
    load_or_create(data_dir / "keys" / "signing.key").public_key.save(keys / "server.pub")
    port = free_port()
    server = start_server(tmp_path, data_dir, port)
    agents = [AgentProcess(tmp_path, f"agent-{i}", port, keys, TOKENS["agent"]) for i in range(3)]
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=([a.address for a in agents], stop))
    try:
        rollouts = client(port)
        wait_for(lambda: len(rollouts.agents({"site": "lab"})) == 3, "the agents to register")
        first = rollouts.create(RolloutRequest(program_sha256=sha["base"], bake_s=0))
        assert final(rollouts, first.rollout_id).state == "succeeded"
        feeder.start()

        bad = final(
            rollouts,
            rollouts.create(
                RolloutRequest(
                    program_sha256=sha["other"],
                    canary_count=1,
                    bake_s=1.0,
                    min_agreement=0.98,
                    min_shadow_frames=50,
                )
            ).rollout_id,
        )
        assert bad.state == "rolled-back", bad.events
        assert bad.gates[0].name == "agreement" and bad.gates[0].value < 0.98
        wait_for(
            lambda: all(
                a.program_sha256 == sha["base"] and not a.shadow_sha256 for a in rollouts.agents()
            ),
            "every agent on the base program with no shadow",
        )
        # an agent reports one shadow sha256 per telemetry period: let the period that
        # still counted the rejected candidate's frames go out before shadowing another
        time.sleep(1.0)

        good = final(
            rollouts,
            rollouts.create(
                RolloutRequest(
                    program_sha256=sha["same"],
                    canary_count=1,
                    bake_s=1.0,
                    min_agreement=0.98,
                    min_shadow_frames=50,
                )
            ).rollout_id,
        )
        assert good.state == "succeeded", good.events
        assert good.gates[0].name == "installs"
        assert any(m.startswith("canary shadow passed: agreement 1") for _, m in good.events)
        wait_for(
            lambda: all(a.program_sha256 == sha["same"] for a in rollouts.agents()),
            "every agent on the candidate",
        )
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join(timeout=30)
        for agent in agents:
            agent.stop()
        server.stop()
