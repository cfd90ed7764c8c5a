"""Server-side batching: queued messages of a stream run as one engine batch, and every
message still gets its own answer (the real sim runtime and engine, no gRPC)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np
import pytest
from support.agent import make_program, random_frames

from spikefleet.engine import Engine
from spikefleet.errors import FrameError
from spikefleet.program.model import Program
from spikefleet.v1 import inference_pb2
from spikefleet_agent.device.sim import SimBackend
from spikefleet_agent.inference.service import InferenceService, _Queued, _StreamState
from spikefleet_agent.runtime import Runtime
from spikefleet_agent.telemetry.collector import Collector


@pytest.fixture
def service() -> Iterator[tuple[InferenceService, Runtime, Collector]]:
    collector = Collector()
    runtime = Runtime(SimBackend(), collector)
    runtime.swap(runtime.load("a" * 64, make_program(1)))
    svc = InferenceService(
        runtime, collector, status=inference_pb2.AgentStatus, max_batch_frames=16
    )
    yield svc, runtime, collector
    svc.close()


def queued(frames: np.ndarray, seq: int, **fields: object) -> _Queued:
    batch = inference_pb2.FrameBatch(frames=frames.tobytes(), shape=frames.shape, seq=seq, **fields)
    return _Queued(batch, 0.0)


def test_consecutive_messages_of_one_shape_form_a_batch_up_to_the_cap(
    service: tuple[InferenceService, Runtime, Collector],
) -> None:
    svc, _, _ = service
    frames = random_frames(20, seed=1)
    odd = np.zeros((1, 28, 28, 1), np.uint8)
    queue = deque(
        [queued(frames[i : i + 1], i) for i in range(10)]
        + [queued(frames[10:20], 10), queued(odd, 11)]
    )
    first = svc._take(queue)  # 10 single frames; the 10-frame message would pass 16
    second = svc._take(queue)  # the 10-frame message; the odd shape may not join it
    third = svc._take(queue)
    assert [q.batch.seq for q in first] == list(range(10))
    assert [q.batch.seq for q in second] == [10]
    assert [q.batch.seq for q in third] == [11] and not queue


def test_a_batch_runs_the_engine_once_and_answers_each_message(
    service: tuple[InferenceService, Runtime, Collector], program: Program
) -> None:
    svc, runtime, collector = service
    frames = random_frames(12, seed=2)
    group = [queued(frames[i : i + 1], 100 + i) for i in range(8)]
    group.append(queued(frames[8:12], 108, return_outputs=True))
    runs_before = runtime._batches
    replies, failure = svc._answer_now(group, _StreamState(4))
    assert failure is None and runtime._batches == runs_before + 1
    engine = Engine(program)
    expected = engine.predict(frames)
    assert [r.seq for r in replies] == list(range(100, 109))
    assert [list(r.classes) for r in replies[:8]] == [[int(c)] for c in expected[:8]]
    assert list(replies[8].classes) == [int(c) for c in expected[8:]]
    assert not replies[0].output_dtype  # outputs only where the message asked for them
    outputs = np.frombuffer(replies[8].outputs, replies[8].output_dtype)
    np.testing.assert_array_equal(
        outputs.reshape(tuple(replies[8].output_shape)), engine.run(frames[8:]).outputs
    )
    assert collector.total_frames == 12


def test_samples_aggregate_across_the_messages_of_a_batch(
    service: tuple[InferenceService, Runtime, Collector],
) -> None:
    svc, _, _ = service
    frames = random_frames(6, seed=3)
    group = [
        queued(frames[i : i + 1], i, sample_id="s" if i < 4 else "t", end_of_sample=i in (3, 5))
        for i in range(6)
    ]
    replies, failure = svc._answer_now(group, _StreamState(4))
    assert failure is None
    closed = [(r.seq, r.sample.sample_id, r.sample.frames) for r in replies if r.HasField("sample")]
    assert closed == [(3, "s", 4), (5, "t", 2)]
    program = make_program(1)
    scores = Engine(program).run(frames[:4]).outputs.reshape(4, -1) * program.output_scales
    np.testing.assert_allclose(replies[3].sample.scores, scores.sum(axis=0), rtol=1e-6)


def test_a_bad_message_inside_a_batch_fails_after_the_ones_before_it_are_answered(
    service: tuple[InferenceService, Runtime, Collector],
) -> None:
    svc, _, collector = service
    frames = random_frames(6, seed=4)
    frames[3] = 16  # beyond the 4-bit input range
    group = [queued(frames[i : i + 1], i) for i in range(6)]
    replies, failure = svc._answer_now(group, _StreamState(4))
    assert [r.seq for r in replies] == [0, 1, 2]
    assert isinstance(failure, FrameError) and "4-bit input" in str(failure)
    assert collector.total_frames == 3
