"""StreamEvents bounds what a client can make a real agent process allocate.

Each refusal is RESOURCE_EXHAUSTED (or INVALID_ARGUMENT) naming the limit and
its config key, the agent's peak memory stays small, and it keeps serving.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from support.agent import make_program, random_frames
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
    assert "spans 250001 windows" in details and "inference.max_frames_per_packet" in details
    still_serves(agent)


def many_samples(count: int, n: int = 50_000) -> list[inference_pb2.EventPacket]:
    """``count`` samples of ``n`` events each (650 kB a packet), none closed, all in one
    still-open 10 ms window."""
    rng = np.random.default_rng(0)
    events = np.empty(n, EVENT_DTYPE)
    events["x"], events["y"] = rng.integers(0, 34, n), rng.integers(0, 34, n)
    events["t"], events["p"] = np.sort(rng.integers(0, 5_000, n)), True
    data = events.tobytes()
    return [inference_pb2.EventPacket(events=data, sample_id=f"s{i}", seq=i) for i in range(count)]


def test_150_open_samples_hold_counts_not_events(agent: AgentProcess) -> None:
    with grpc.insecure_channel(agent.address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        replies = list(stub.StreamEvents(iter(many_samples(150)), timeout=120))
    assert len(replies) == 150 and all(r.frames == 0 for r in replies)  # windows still open
    still_serves(agent)


def test_buffered_events_are_bounded_per_stream(tmp_path: Path) -> None:
    program = make_program(1)
    # overlapping windows keep their events until complete
    program.input_spec = InputSpec(
        sensor_size=(34, 34, 2), time_window=10_000, overlap=5_000, clip_bits=4
    )
    with AgentProcess(program, tmp_path, max_stream_bytes=16 * 1024 * 1024) as agent:
        error = stream(agent.address, many_samples(150))
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
