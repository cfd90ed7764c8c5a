"""StreamEvents bounds what a client can make a real agent process allocate.

Each refusal is RESOURCE_EXHAUSTED (or INVALID_ARGUMENT) naming the limit and
its config key, the agent's peak memory stays small, and it keeps serving.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from agent_helpers import make_program, random_frames
from support.agent_process import AgentProcess

from spikefleet.client.agent import AgentClient
from spikefleet.events import EVENT_DTYPE, InputSpec, make_events
from spikefleet.v1 import inference_pb2, inference_pb2_grpc

PEAK_RSS_LIMIT = 600 * 1024 * 1024  # an agent serving a small program uses ~200 MB


def stream(address: str, packets: list[inference_pb2.EventPacket]) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            for _ in stub.StreamEvents(iter(packets), timeout=60):
                pass
    return info.value  # type: ignore[return-value]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    program = make_program(1)  # no input spec: the default permits stream overrides
    with AgentProcess(program, tmp_path_factory.mktemp("limits")) as process:
        yield process


def still_serves(agent: AgentProcess) -> None:
    assert agent.alive(), agent.log()
    with AgentClient(agent.address) as client:
        assert len(client.infer(random_frames(2)).classes) == 2
    assert agent.peak_rss_bytes() < PEAK_RSS_LIMIT


def test_a_26_byte_packet_cannot_ask_for_a_huge_sensor(agent: AgentProcess) -> None:
    events = make_events([1, 2], [1, 2], [0, 250_000], [True, False])
    assert events.nbytes == 26
    packet = inference_pb2.EventPacket(
        events=events.tobytes(), sample_id="s", sensor_width=65535, sensor_height=65535
    )
    error = stream(agent.address, [packet])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "inference.max_sensor_pixels" in (error.details() or "")
    still_serves(agent)


def test_a_26_byte_packet_cannot_make_a_frame_per_microsecond(agent: AgentProcess) -> None:
    events = make_events([1, 2], [1, 2], [0, 250_000], [True, False])
    packet = inference_pb2.EventPacket(events=events.tobytes(), sample_id="s", time_window_us=1)
    error = stream(agent.address, [packet])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = error.details() or ""
    assert "completes 250000 frames" in details and "inference.max_frames_per_packet" in details
    still_serves(agent)


def test_150_open_samples_cannot_hold_unbounded_events(agent: AgentProcess) -> None:
    rng = np.random.default_rng(0)
    n = 50_000  # 650 kB per packet, all in one open 10 ms window
    events = np.empty(n, EVENT_DTYPE)
    events["x"], events["y"] = rng.integers(0, 34, n), rng.integers(0, 34, n)
    events["t"], events["p"] = np.sort(rng.integers(0, 5_000, n)), True
    data = events.tobytes()
    packets = [inference_pb2.EventPacket(events=data, sample_id=f"s{i}", seq=i) for i in range(150)]
    error = stream(agent.address, packets)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "inference.max_stream_bytes" in (error.details() or "")
    still_serves(agent)


def test_overrides_are_checked_against_the_program(agent: AgentProcess) -> None:
    events = make_events([1], [1], [0], [True])
    packet = inference_pb2.EventPacket(
        events=events.tobytes(), sample_id="s", sensor_width=68, sensor_height=68
    )
    error = stream(agent.address, [packet])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "makes frames of (68, 68, 2)" in (error.details() or "")


def test_per_sample_bins_need_samples(tmp_path: Path) -> None:
    program = make_program(1)
    program.input_spec = InputSpec(sensor_size=(34, 34, 2), n_time_bins=3, clip_bits=4)
    with AgentProcess(program, tmp_path) as agent:
        events = make_events([1], [1], [0], [True])
        error = stream(agent.address, [inference_pb2.EventPacket(events=events.tobytes())])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "send sample_id and end_of_sample" in (error.details() or "")
