"""Pipelined streams against a real agent on loopback: the sync client and the
asyncio client (the fast path) get one answer per message, in order, equal to the
engine's, and errors keep their gRPC meaning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import numpy as np
import pytest
from support.agent import random_frames

from spikefleet.client.agent import AgentClient, AsyncAgentClient, FrameBatch
from spikefleet.engine import Engine
from spikefleet.errors import AgentRequestError, FrameError
from spikefleet.program.model import Activation, Convolutional, FullyConnected, InputData, Program
from spikefleet.v1 import inference_pb2, inference_pb2_grpc
from spikefleet_agent.daemon import Agent

StartAgent = Callable[..., Agent]


def address_of(agent: Agent) -> str:
    return f"127.0.0.1:{agent.inference_port}"


def test_single_frame_messages_each_get_their_answer_in_order(
    standalone_agent: StartAgent, program: Program
) -> None:
    frames = random_frames(300, seed=11)
    batches = [
        FrameBatch(frames[i : i + 1], sample_id=f"s{i // 30}", end_of_sample=i % 30 == 29)
        for i in range(300)
    ]
    with AgentClient(address_of(standalone_agent(program))) as client:
        predictions = list(client.stream(batches))
    engine = Engine(program)
    assert [p.seq for p in predictions] == list(range(300))
    np.testing.assert_array_equal(
        np.concatenate([p.classes for p in predictions]), engine.predict(frames)
    )
    closed = [p.sample for p in predictions if p.sample is not None]
    assert [(s.sample_id, s.frames) for s in closed] == [(f"s{k}", 30) for k in range(10)]
    outputs = engine.run(frames[:30]).outputs.reshape(30, -1) * program.output_scales
    np.testing.assert_allclose(closed[0].scores, outputs.sum(axis=0), rtol=1e-6)


SHAPE_MISMATCH = np.zeros((1, 28, 28, 1), np.uint8)
OUT_OF_RANGE = np.full((1, 34, 34, 2), 16, np.uint8)


@pytest.mark.parametrize(("bad", "message"), [(SHAPE_MISMATCH, "shape"), (OUT_OF_RANGE, "4-bit")])
def test_a_bad_message_mid_stream_fails_after_every_earlier_answer(
    standalone_agent: StartAgent, program: Program, bad: np.ndarray, message: str
) -> None:
    frames = random_frames(40, seed=12)
    batches = [frames[i : i + 1] for i in range(40)]
    batches.insert(25, bad)
    answered = []
    client = AgentClient(address_of(standalone_agent(program)))
    with client, pytest.raises(FrameError, match=message):
        for prediction in client.stream(batches):
            answered.append(prediction)
    assert [p.seq for p in answered] == list(range(25))


def test_the_async_client_streams_from_an_async_producer(
    standalone_agent: StartAgent, program: Program
) -> None:
    agent = standalone_agent(program)
    frames = random_frames(64, seed=13)

    async def produce() -> AsyncIterator[np.ndarray]:
        for i in range(0, 64, 2):
            await asyncio.sleep(0)
            yield frames[i : i + 2]

    async def run() -> tuple[list[int], np.ndarray, np.ndarray]:
        async with AsyncAgentClient(address_of(agent)) as client:
            seqs, classes = [], []
            async for prediction in client.stream(produce()):
                seqs.append(prediction.seq)
                classes.append(prediction.classes)
            one = await client.infer(frames[:5], return_outputs=True)
            assert one.outputs is not None
            return seqs, np.concatenate(classes), one.outputs

    seqs, classes, outputs = asyncio.run(run())
    engine = Engine(program)
    assert seqs == list(range(32))
    np.testing.assert_array_equal(classes, engine.predict(frames))
    np.testing.assert_array_equal(outputs, engine.run(frames[:5]).outputs)


def test_the_async_client_reports_errors_like_the_sync_one(
    standalone_agent: StartAgent, program: Program
) -> None:
    agent = standalone_agent(program, token="s3cret")
    good = random_frames(3, seed=14)

    async def run() -> None:
        async with AsyncAgentClient(address_of(agent), token="s3cret") as client:
            assert (await client.status()).agent_id == "edge-1"
            with pytest.raises(FrameError, match="4-bit"):
                async for _ in client.stream([good, OUT_OF_RANGE]):
                    pass
            with pytest.raises(FrameError, match="uint8"):
                async for _ in client.stream([good.astype(np.float32)]):
                    pass
        async with AsyncAgentClient(address_of(agent), token="wrong") as client:
            with pytest.raises(AgentRequestError) as info:
                async for _ in client.stream([good]):
                    pass
            assert info.value.code == "UNAUTHENTICATED", str(info.value)
        async with AsyncAgentClient("127.0.0.1:1", timeout=2) as client:
            with pytest.raises(AgentRequestError, match="unreachable"):
                await client.infer(good)

    asyncio.run(run())


def test_a_stream_without_the_token_is_refused(
    standalone_agent: StartAgent, program: Program
) -> None:
    agent = standalone_agent(program, token="s3cret")
    with AgentClient(address_of(agent)) as client, pytest.raises(AgentRequestError) as info:
        list(client.stream([random_frames(1)]))
    assert info.value.code == "UNAUTHENTICATED"


def test_messages_beyond_the_inline_batch_run_in_a_thread_and_answer_alike(
    standalone_agent: StartAgent, program: Program
) -> None:
    frames = random_frames(201, seed=15)
    batches = [frames[:100], frames[100:101], frames[101:]]  # 100 and 100 frames: > 64
    with AgentClient(address_of(standalone_agent(program))) as client:
        predictions = list(client.stream(batches))
        one = client.infer(frames[:150])
    engine = Engine(program)
    assert [len(p.classes) for p in predictions] == [100, 1, 100]
    np.testing.assert_array_equal(
        np.concatenate([p.classes for p in predictions]), engine.predict(frames)
    )
    np.testing.assert_array_equal(one.classes, engine.predict(frames[:150]))


def slow_program() -> Program:
    """A wide 5x5 convolution: milliseconds a frame, slower than a client sends."""
    rng = np.random.default_rng(0)
    conv = Convolutional(
        "wide",
        rng.integers(-7, 8, (5, 5, 2, 512)).astype(np.int8),
        np.zeros(512, np.int32),
        activation=Activation(1, np.ones(512, np.float32)),
    )
    fc = FullyConnected(
        "fc", rng.integers(-7, 8, (34 * 34 * 512, 10)).astype(np.int8), np.zeros(10, np.int32)
    )
    return Program("slow", [InputData("input", (34, 34, 2), 4), conv, fc])


def test_a_client_faster_than_the_engine_is_held_back_not_buffered(
    standalone_agent: StartAgent,
) -> None:
    """A slow program runs in a thread, so the stream keeps reading while it works;
    the reading stops once max_queued_frames wait, and HTTP/2 flow control then
    stalls a sender that outruns the engine instead of the agent taking in (and
    holding) everything it is offered."""
    total = 20_000
    frame = np.full((1, 34, 34, 2), 15, np.uint8).tobytes()
    pulled = 0

    def requests() -> Iterator[inference_pb2.FrameBatch]:
        nonlocal pulled
        for seq in range(total):
            pulled += 1
            yield inference_pb2.FrameBatch(frames=frame, shape=[1, 34, 34, 2], seq=seq)

    with grpc.insecure_channel(address_of(standalone_agent(slow_program()))) as channel:
        answers = inference_pb2_grpc.InferenceStub(channel).Stream(requests())
        for answered, _ in enumerate(answers, start=1):
            if answered == 300:
                break
        sent = pulled
        answers.cancel()
    assert sent < total // 4, f"the client got {sent} messages out for 300 answers"


def test_the_async_client_streams_events_like_the_sync_one(
    standalone_agent: StartAgent, program: Program
) -> None:
    from spikefleet.events import make_events

    agent = standalone_agent(program)
    rng = np.random.default_rng(21)
    n = 2000
    events = make_events(
        rng.integers(0, 34, n),
        rng.integers(0, 34, n),
        np.sort(rng.integers(0, 40_000, n)),
        rng.integers(0, 2, n).astype(bool),
    )
    packets = np.array_split(events, 5)

    async def packets_later() -> AsyncIterator[np.ndarray]:
        for packet in packets:
            await asyncio.sleep(0)
            yield packet

    async def run() -> list[np.ndarray]:
        async with AsyncAgentClient(address_of(agent)) as client:
            return [
                p.classes
                async for p in client.stream_events(
                    packets_later(), sample_id="a", time_window_us=10_000
                )
            ]

    with AgentClient(address_of(agent)) as client:
        expected = [
            p.classes for p in client.stream_events(packets, sample_id="s", time_window_us=10_000)
        ]
    got = asyncio.run(run())
    assert len(got) == len(expected) == 5
    for mine, theirs in zip(got, expected, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_one_frame_gives_the_engine_answer_through_the_agent_and_the_engine(
    standalone_agent: StartAgent, program: Program
) -> None:
    frame = random_frames(1, seed=22)[0]  # H x W x C
    with AgentClient(address_of(standalone_agent(program))) as client:
        prediction = client.infer(frame, return_outputs=True)
    assert prediction.outputs is not None
    np.testing.assert_array_equal(prediction.outputs, Engine(program).run(frame).outputs)
