"""The agent's inference API, served by a real agent on loopback (sim backend)."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from support.agent import make_program, random_frames

from spikefleet.client.agent import AgentClient, FrameBatch
from spikefleet.datasets import ndigits
from spikefleet.engine import Engine
from spikefleet.errors import (
    AgentConfigError,
    AgentRequestError,
    DeviceBusyError,
    EngineError,
    FrameError,
)
from spikefleet.events import make_events
from spikefleet.events.binning import spec_frames
from spikefleet.program.model import Program
from spikefleet_agent.daemon import Agent

StartAgent = Callable[..., Agent]


def client_of(agent: Agent, token: str | None = None) -> AgentClient:
    return AgentClient(f"127.0.0.1:{agent.inference_port}", token=token)


def test_infer_predicts_what_the_engine_predicts(
    standalone_agent: StartAgent, program: Program
) -> None:
    frames = random_frames(16, seed=5)
    with client_of(standalone_agent(program)) as client:
        prediction = client.infer(frames, return_outputs=True)
    engine = Engine(program)
    np.testing.assert_array_equal(prediction.classes, engine.predict(frames))
    assert prediction.outputs is not None
    np.testing.assert_array_equal(prediction.outputs, engine.run(frames).outputs)


def test_stream_answers_every_batch_in_order(
    standalone_agent: StartAgent, program: Program
) -> None:
    batches = [random_frames(n, seed=n) for n in (1, 32, 7)]
    with client_of(standalone_agent(program)) as client:
        predictions = list(client.stream(batches))
    engine = Engine(program)
    assert [p.seq for p in predictions] == [0, 1, 2]
    for batch, prediction in zip(batches, predictions, strict=True):
        np.testing.assert_array_equal(prediction.classes, engine.predict(batch))


def test_a_sample_split_over_windows_is_aggregated(
    standalone_agent: StartAgent, program: Program
) -> None:
    windows = [random_frames(3, seed=s) for s in (10, 11, 12)]
    batches = [
        FrameBatch(w, sample_id="digit-7", end_of_sample=i == 2) for i, w in enumerate(windows)
    ]
    with client_of(standalone_agent(program)) as client:
        predictions = list(client.stream(batches))
    assert [p.sample is None for p in predictions] == [True, True, False]
    sample = predictions[-1].sample
    assert sample is not None
    outputs = Engine(program).run(np.concatenate(windows)).outputs.reshape(9, -1)
    scores = (outputs.astype(np.float32) * program.output_scales).sum(axis=0)
    assert (sample.sample_id, sample.frames) == ("digit-7", 9)
    np.testing.assert_allclose(sample.scores, scores, rtol=1e-6)
    assert sample.predicted_class == int(scores.argmax())


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 28, 28, 1), np.uint8), "shape"),
        (np.full((1, 34, 34, 2), 16, np.uint8), "4-bit input"),
    ],
)
def test_wrong_frames_are_invalid_argument(
    standalone_agent: StartAgent, program: Program, frames: np.ndarray, message: str
) -> None:
    with client_of(standalone_agent(program)) as client, pytest.raises(FrameError, match=message):
        client.infer(frames)


def test_bytes_that_do_not_match_the_shape_are_invalid_argument(
    standalone_agent: StartAgent, program: Program
) -> None:
    from spikefleet.v1 import inference_pb2, inference_pb2_grpc

    agent = standalone_agent(program)
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{agent.inference_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Infer(inference_pb2.FrameBatch(frames=b"\x00" * 10, shape=[1, 34, 34, 2]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 2312" in info.value.details()


def test_without_a_program_inference_is_a_failed_precondition(
    standalone_agent: StartAgent,
) -> None:
    with client_of(standalone_agent()) as client, pytest.raises(EngineError, match="no program"):
        client.infer(random_frames(1))


def test_raw_events_are_binned_into_frames_by_the_agent(
    standalone_agent: StartAgent, program: Program
) -> None:
    rng = np.random.default_rng(4)
    n = 3000
    events = make_events(
        rng.integers(0, 34, n),
        rng.integers(0, 34, n),
        np.sort(rng.integers(0, 50_000, n)),
        rng.integers(0, 2, n).astype(bool),
    )
    packets = np.array_split(events, 7)
    with client_of(standalone_agent(program)) as client:
        predictions = list(client.stream_events(packets, sample_id="s", time_window_us=10_000))
    classes = np.concatenate([p.classes for p in predictions])
    # a program without a spec bins by the documented default (10 ms windows, tonic's rules)
    expected = spec_frames(events, program.effective_input_spec)
    np.testing.assert_array_equal(classes, Engine(program).predict(expected))
    assert predictions[-1].sample is not None
    assert predictions[-1].sample.frames == len(expected)


def test_a_program_switch_does_not_drop_a_running_stream(
    standalone_agent: StartAgent, program: Program
) -> None:
    agent = standalone_agent(program)
    assert agent.runtime is not None
    runtime = agent.runtime
    other = make_program(2)
    first_sha = runtime.current().sha256
    frames = random_frames(4, seed=9)
    three_answered = threading.Event()

    def batches() -> Iterator[np.ndarray]:
        for i in range(6):
            if i == 3:  # swap only once the first three answers are back
                assert three_answered.wait(30)
                runtime.swap(runtime.load("b" * 64, other))
            yield frames

    predictions = []
    with client_of(agent) as client:
        for prediction in client.stream(batches()):
            predictions.append(prediction)
            if len(predictions) == 3:
                three_answered.set()
    assert [p.program_sha256 for p in predictions] == [first_sha] * 3 + ["b" * 64] * 3
    np.testing.assert_array_equal(predictions[0].classes, Engine(program).predict(frames))
    np.testing.assert_array_equal(predictions[-1].classes, Engine(other).predict(frames))


def test_an_exposed_api_wants_the_token(standalone_agent: StartAgent, program: Program) -> None:
    agent = standalone_agent(program, token="s3cret")
    with client_of(agent) as client, pytest.raises(AgentRequestError) as info:
        client.infer(random_frames(1))
    assert info.value.code == "UNAUTHENTICATED"
    with client_of(agent, token="s3cret") as client:
        assert len(client.infer(random_frames(2)).classes) == 2


def test_a_unix_socket_works(
    standalone_agent: StartAgent, program: Program, tmp_path: Path
) -> None:
    socket = tmp_path / "inference.sock"
    standalone_agent(program, address=f"unix://{socket}")
    with AgentClient(f"unix://{socket}") as client:
        assert client.status().program_name == "agent-test"


def test_status_and_metrics_report_what_ran(standalone_agent: StartAgent, program: Program) -> None:
    agent = standalone_agent(program, metrics=True)
    with client_of(agent) as client:
        client.infer(random_frames(5))
        status = client.status()
    assert status.agent_id == "edge-1" and status.backend == "sim"
    assert status.input_shape == (34, 34, 2) and status.input_bits == 4
    assert status.frames == 5 and status.labels == [str(d) for d in range(10)]
    body = urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/metrics").read()
    assert b"spikefleet_agent_frames_total 5.0" in body


def test_telemetry_batch_counts_frames_classes_and_latency(
    standalone_agent: StartAgent, program: Program
) -> None:
    agent = standalone_agent(program)
    frames = random_frames(20, seed=2)
    with client_of(agent) as client:
        for _ in range(20):  # enough batches for the periodic spike-count sample
            client.infer(frames)
    seq = agent.flush_telemetry()
    (batch,) = agent.spool.pending(seq - 1)
    assert batch.frames == 400 and batch.predictions == 400
    expected = np.bincount(Engine(program).predict(frames), minlength=10) * 20
    assert list(batch.class_histogram) == list(expected[: len(batch.class_histogram)])
    assert 0 < batch.latency_p50_ms <= batch.latency_p95_ms <= batch.latency_p99_ms
    assert set(batch.spike_rates) >= {"conv1", "conv2"}
    assert batch.program_sha256 == agent.runtime.current().sha256


def test_a_message_over_the_size_cap_is_refused(
    standalone_agent: StartAgent, program: Program
) -> None:
    agent = standalone_agent(program, max_message_bytes=100_000)  # about 43 frames
    with client_of(agent) as client, pytest.raises(AgentRequestError) as info:
        client.infer(random_frames(64))
    assert info.value.code == "RESOURCE_EXHAUSTED"


def test_a_stream_cannot_hold_unbounded_open_samples(
    standalone_agent: StartAgent, program: Program
) -> None:
    agent = standalone_agent(program, max_open_samples=4)
    frames = random_frames(1)
    batches = [FrameBatch(frames, sample_id=f"s{i}") for i in range(5)]  # never closed
    with client_of(agent) as client, pytest.raises(AgentRequestError) as info:
        list(client.stream(batches))
    assert info.value.code == "RESOURCE_EXHAUSTED"
    assert "4 samples are open" in str(info.value)


def test_a_second_agent_on_the_same_state_is_refused_and_the_first_keeps_serving(
    standalone_agent: StartAgent, program: Program
) -> None:
    first = standalone_agent(program)
    with pytest.raises(DeviceBusyError, match="another spikefleet-agent"):
        standalone_agent(name="edge-1")
    with client_of(first) as client:
        assert len(client.infer(random_frames(1)).classes) == 1


def test_a_program_with_the_ndigits_spec_answers_like_offline_evaluation(
    standalone_agent: StartAgent, program: Program
) -> None:
    program.input_spec = ndigits.INPUT_SPEC
    rng = np.random.default_rng(7)
    n = 4000
    events = make_events(
        rng.integers(0, 34, n),
        rng.integers(0, 34, n),
        np.sort(rng.integers(0, 320_000, n)),
        rng.integers(0, 2, n).astype(bool),
    )
    with client_of(standalone_agent(program)) as client:
        predictions = list(client.stream_events(np.array_split(events, 9), sample_id="d"))
    frames = ndigits.sample_frames(events)
    classes = np.concatenate([p.classes for p in predictions])
    np.testing.assert_array_equal(classes, Engine(program).predict(frames))
    scores = Engine(program).run(frames).outputs.reshape(3, -1) * program.output_scales
    assert predictions[-1].sample is not None
    assert predictions[-1].sample.predicted_class == ndigits.predict_sample(scores)
    assert predictions[-1].decision == "sample_sum"


def test_a_stream_override_the_spec_forbids_is_invalid_argument(
    standalone_agent: StartAgent, program: Program
) -> None:
    program.input_spec = ndigits.INPUT_SPEC
    events = make_events([1], [1], [0], [True])
    with (
        client_of(standalone_agent(program)) as client,
        pytest.raises(FrameError, match="does not permit per-stream overrides"),
    ):
        list(client.stream_events([events], sample_id="s", time_window_us=5000))


def test_an_address_in_use_is_a_config_error_that_names_it(
    standalone_agent: StartAgent, program: Program
) -> None:
    first = standalone_agent(program)
    taken = f"127.0.0.1:{first.inference_port}"
    with pytest.raises(AgentConfigError, match=f"cannot listen on {taken}"):
        standalone_agent(program, name="edge-2", address=taken)
    with client_of(first) as client:
        assert len(client.infer(random_frames(1)).classes) == 1


def test_a_stream_override_is_counted_in_telemetry(
    standalone_agent: StartAgent, program: Program
) -> None:
    agent = standalone_agent(program)  # no spec recorded: the default permits overrides
    events = make_events([1, 2], [1, 2], [0, 30_000], [True, True])
    with client_of(agent) as client:
        list(client.stream_events([events], sample_id="a", time_window_us=5_000))
        list(client.stream_events([events], sample_id="b"))  # the spec's own window
    seq = agent.flush_telemetry()
    (batch,) = agent.spool.pending(seq - 1)
    assert dict(batch.stream_overrides) == {"time_window": 1}


def test_a_live_stream_s_last_windows_come_when_it_ends(
    standalone_agent: StartAgent, program: Program
) -> None:
    rng = np.random.default_rng(3)
    n = 2000
    events = make_events(
        rng.integers(0, 34, n),
        rng.integers(0, 34, n),
        np.sort(rng.integers(5_000_000, 5_095_000, n)),
        rng.integers(0, 2, n).astype(bool),
    )
    with client_of(standalone_agent(program)) as client:
        replies = list(
            client.stream_events(np.array_split(events, 5), sample_id="", end_of_sample=False)
        )
    assert [r.seq for r in replies] == [0, 1, 2, 3, 4, 5]  # one more when the stream ended
    assert replies[-1].sample is not None and replies[-1].sample.sample_id == ""
    classes = np.concatenate([r.classes for r in replies])
    expected = spec_frames(events, program.effective_input_spec)
    np.testing.assert_array_equal(classes, Engine(program).predict(expected))
