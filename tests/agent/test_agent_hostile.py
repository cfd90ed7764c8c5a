"""The agent's inference API against empty batches and bytes that are no protobuf."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from spikefleet.program.model import Program
from spikefleet.v1 import inference_pb2, inference_pb2_grpc
from spikefleet_agent.daemon import Agent

StartAgent = Callable[..., Agent]


@pytest.mark.parametrize("shape", [[0, 34, 34, 2], [1, 0, 34, 2], [3, 34, 34, 0]])
def test_a_batch_with_an_empty_axis_is_invalid_argument(
    standalone_agent: StartAgent, program: Program, shape: list[int]
) -> None:
    agent = standalone_agent(program)
    with grpc.insecure_channel(f"127.0.0.1:{agent.inference_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        with pytest.raises(grpc.RpcError) as unary:
            stub.Infer(inference_pb2.FrameBatch(frames=b"", shape=shape), timeout=30)
        with pytest.raises(grpc.RpcError) as streamed:
            list(stub.Stream(iter([inference_pb2.FrameBatch(shape=shape)]), timeout=30))
        assert stub.Status(inference_pb2.StatusRequest(), timeout=30).program_sha256
    for error in (unary.value, streamed.value):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at least one frame" in (error.details() or "")


@pytest.mark.parametrize(
    ("method", "streaming"),
    [("Infer", False), ("Status", False), ("Stream", True), ("StreamEvents", True)],
)
def test_bytes_that_are_no_protobuf_are_invalid_argument(
    standalone_agent: StartAgent, program: Program, method: str, streaming: bool
) -> None:
    agent = standalone_agent(program)
    with grpc.insecure_channel(f"127.0.0.1:{agent.inference_port}") as channel:
        path = f"/spikefleet.v1.Inference/{method}"
        with pytest.raises(grpc.RpcError) as raised:
            if streaming:
                list(channel.stream_stream(path)(iter([b"\xff\xff\xff\xff\x0f"]), timeout=30))
            else:
                channel.unary_unary(path)(b"\xff\xff\xff\xff\x0f", timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid spikefleet.v1." in (raised.value.details() or "")


def _fill_the_disk(agent: Agent) -> None:
    """Cap the spool file at its current size (SQLite then fails with "database or disk
    is full", as on a full disk) and flush until an append no longer fits."""
    (pages,) = agent.spool._db.execute("PRAGMA page_count").fetchone()
    agent.spool._db.execute(f"PRAGMA max_page_count={pages}")
    for _ in range(10_000):
        agent.collector.record_events(1)
        if agent.flush_telemetry() == 0:
            return
    raise AssertionError("the spool never filled up")


def _free_the_disk(agent: Agent) -> None:
    agent.spool._db.execute("PRAGMA max_page_count=1073741823")


def test_a_full_disk_holds_telemetry_until_it_can_be_written_in_order(
    standalone_agent: StartAgent, program: Program, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = standalone_agent(program)
    _fill_the_disk(agent)
    before = sum(b.events for b in agent.spool.pending(0, limit=100_000))
    for events in (10, 20, 30):
        agent.collector.record_events(events)
        assert agent.flush_telemetry() == 0  # not written, not lost
    _free_the_disk(agent)
    agent.collector.record_events(40)
    assert agent.flush_telemetry() > 0

    batches = agent.spool.pending(0, limit=100_000)
    seqs = [b.seq for b in batches]
    assert seqs == list(range(1, len(seqs) + 1))  # contiguous: nothing skipped
    assert sum(b.events for b in batches) == before + 1 + 10 + 20 + 30 + 40
    assert all(b.spool_dropped == 0 for b in batches)
    log = capsys.readouterr()
    assert "telemetry.spool_unwritable" in log.out + log.err
    assert "cannot rollback" not in log.out + log.err


def test_batches_a_full_disk_makes_the_agent_give_up_are_counted_as_dropped(
    standalone_agent: StartAgent, program: Program, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spikefleet_agent import daemon

    monkeypatch.setattr(daemon, "HELD_BATCHES", 2)
    agent = standalone_agent(program)
    _fill_the_disk(agent)  # holds one batch
    for _ in range(4):
        agent.collector.record_events(5)
        agent.flush_telemetry()  # holds at most two: three given up
    _free_the_disk(agent)
    agent.flush_telemetry()
    batches = agent.spool.pending(0, limit=100_000)
    assert [b.spool_dropped for b in batches[-3:]] == [3, 3, 3]
    assert agent.spool.dropped() == 3
