"""The Inference servicer: frames or events in, predictions out.

Flow control: each stream is handled by one thread that reads the next
message only after answering the previous one, so a client that sends faster
than the device runs is held back by HTTP/2 flow control instead of queueing
in agent memory; messages are capped in size, streams in number, and open
samples per stream in count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

import grpc
import numpy as np

from spikefleet.errors import EventFormatError, FrameError
from spikefleet.events import EVENT_DTYPE, FrameAccumulator
from spikefleet.v1 import inference_pb2, inference_pb2_grpc
from spikefleet_agent.device.base import RunResult
from spikefleet_agent.runtime import Loaded, NoProgramError, Runtime
from spikefleet_agent.telemetry.collector import Collector


@dataclass
class _Sample:
    scores: np.ndarray | None = None
    frames: int = 0


@dataclass
class _StreamState:
    """Per-stream aggregation of outputs over each sample's windows."""

    max_open: int
    samples: dict[str, _Sample] = field(default_factory=dict)

    def add(
        self, context: grpc.ServicerContext, sample_id: str, result: RunResult, end: bool
    ) -> inference_pb2.SampleResult | None:
        if not sample_id:
            return None
        sample = self.samples.get(sample_id)
        if sample is None:
            if len(self.samples) >= self.max_open:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self.max_open} samples are open on this stream: "
                    "close samples with end_of_sample before starting new ones",
                )
            sample = self.samples[sample_id] = _Sample()
        if len(result.scores):
            summed = result.scores.sum(axis=0)
            sample.scores = summed if sample.scores is None else sample.scores + summed
            sample.frames += len(result.scores)
        if not end:
            return None
        del self.samples[sample_id]
        scores = sample.scores if sample.scores is not None else np.zeros(0, np.float32)
        return inference_pb2.SampleResult(
            sample_id=sample_id,
            predicted_class=int(scores.argmax()) if len(scores) else -1,
            frames=sample.frames,
            scores=scores.tolist(),
        )


BINNING_NDIGITS = "ndigits-sample"
MAX_SAMPLE_EVENTS = 2_000_000  # one buffered sample: 26 MB of events at most


class _Binner(Protocol):
    def push(self, events: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...


class _Windows:
    """Live binning into fixed time windows (spikefleet.events.FrameAccumulator)."""

    def __init__(self, accumulator: FrameAccumulator) -> None:
        self._accumulator = accumulator

    def push(self, events: np.ndarray) -> np.ndarray:
        return self._accumulator.push(events).frames

    def flush(self) -> np.ndarray:
        return self._accumulator.flush().frames


class _WholeSample:
    """Keeps one sample's events; its frames come at the end, as the reference task makes them."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self._shape = shape
        self._chunks: list[np.ndarray] = []
        self._count = 0

    def push(self, events: np.ndarray) -> np.ndarray:
        self._count += len(events)
        if self._count > MAX_SAMPLE_EVENTS:
            raise EventFormatError(
                f"a sample holds more than {MAX_SAMPLE_EVENTS} events: close it with "
                "end_of_sample sooner, or bin live with time windows"
            )
        self._chunks.append(events.copy())
        return np.zeros((0, *self._shape), np.uint8)

    def flush(self) -> np.ndarray:
        from spikefleet.datasets.ndigits import sample_frames

        if not self._chunks:
            return np.zeros((0, *self._shape), np.uint8)
        frames = sample_frames(np.concatenate(self._chunks))
        if frames.shape[1:] != self._shape:
            raise EventFormatError(
                f"ndigits-sample frames are {frames.shape[1:]}, the program takes {self._shape}"
            )
        return frames


def _empty_result() -> RunResult:
    return RunResult(
        outputs=np.zeros((0,), np.int32),
        scores=np.zeros((0, 0), np.float32),
        classes=np.zeros(0, np.int64),
    )


def decode_frames(batch: inference_pb2.FrameBatch) -> np.ndarray:
    shape = tuple(batch.shape)
    if len(shape) != 4:
        raise FrameError(f"shape must be (N, H, W, C), got {list(shape)}")
    expected = math.prod(shape)
    if len(batch.frames) != expected:
        raise FrameError(
            f"frames holds {len(batch.frames)} bytes but shape {list(shape)} needs {expected} "
            "(one uint8 per value, C order)"
        )
    return np.frombuffer(batch.frames, dtype=np.uint8).reshape(shape)


class InferenceService(inference_pb2_grpc.InferenceServicer):
    def __init__(
        self,
        runtime: Runtime,
        collector: Collector,
        *,
        status: Callable[[], inference_pb2.AgentStatus],
        max_open_samples: int = 1024,
        event_window_us: int = 10_000,
    ) -> None:
        self._runtime = runtime
        self._collector = collector
        self._status = status
        self._max_open = max_open_samples
        self._event_window_us = event_window_us

    def _fail(
        self, context: grpc.ServicerContext, kind: str, code: grpc.StatusCode, msg: str
    ) -> NoReturn:
        self._collector.error(kind)
        context.abort(code, msg)
        raise AssertionError("context.abort returned")  # grpc raises inside abort

    def _active(self, context: grpc.ServicerContext) -> Loaded:
        try:
            return self._runtime.current()
        except NoProgramError as exc:
            self._fail(context, "no-program", grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    def _run(self, context: grpc.ServicerContext, frames: np.ndarray, active: Loaded) -> RunResult:
        try:
            return self._runtime.infer(frames, active)
        except FrameError as exc:
            self._fail(context, "invalid-argument", grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def _answer(
        self,
        context: grpc.ServicerContext,
        batch: inference_pb2.FrameBatch,
        state: _StreamState,
        started: float,
    ) -> inference_pb2.Predictions:
        try:
            frames = decode_frames(batch)
        except FrameError as exc:
            self._fail(context, "invalid-argument", grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        active = self._active(context)
        result = self._run(context, frames, active)
        reply = self._reply(batch.seq, active, result, batch.return_outputs)
        sample = state.add(context, batch.sample_id, result, batch.end_of_sample)
        if sample is not None:
            reply.sample.CopyFrom(sample)
        self._collector.record(len(frames), result, time.perf_counter() - started)
        return reply

    @staticmethod
    def _reply(
        seq: int, active: Loaded, result: RunResult, outputs: bool
    ) -> inference_pb2.Predictions:
        reply = inference_pb2.Predictions(
            seq=seq,
            classes=result.classes.tolist(),
            program_sha256=active.sha256,
            frames=len(result.classes),
        )
        if outputs:
            reply.outputs = np.ascontiguousarray(result.outputs).tobytes()
            reply.output_shape.extend(result.outputs.shape)
            reply.output_dtype = str(result.outputs.dtype)
        return reply

    def Stream(
        self, request_iterator: Iterator[inference_pb2.FrameBatch], context: grpc.ServicerContext
    ) -> Iterator[inference_pb2.Predictions]:
        state = _StreamState(self._max_open)
        for batch in request_iterator:
            yield self._answer(context, batch, state, time.perf_counter())

    def Infer(
        self, request: inference_pb2.FrameBatch, context: grpc.ServicerContext
    ) -> inference_pb2.Predictions:
        started = time.perf_counter()
        request.sample_id, request.end_of_sample = request.sample_id or "unary", True
        return self._answer(context, request, _StreamState(1), started)

    def StreamEvents(
        self, request_iterator: Iterator[inference_pb2.EventPacket], context: grpc.ServicerContext
    ) -> Iterator[inference_pb2.Predictions]:
        state = _StreamState(self._max_open)
        binners: dict[str, _Binner] = {}
        for packet in request_iterator:
            started = time.perf_counter()
            if len(packet.events) % EVENT_DTYPE.itemsize:
                self._fail(
                    context,
                    "invalid-argument",
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"events holds {len(packet.events)} bytes, not a multiple of the "
                    f"{EVENT_DTYPE.itemsize}-byte EVENT_DTYPE record (x i16, y i16, t i64, p bool)",
                )
            events = np.frombuffer(packet.events, dtype=EVENT_DTYPE)
            active = self._active(context)
            found = binners.get(packet.sample_id)
            if found is not None:
                binner = found
            else:
                if len(binners) >= self._max_open:
                    self._fail(
                        context,
                        "resource-exhausted",
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{self._max_open} samples are open on this stream: "
                        "close samples with end_of_sample",
                    )
                binner = self._binner(context, packet, active)
                binners[packet.sample_id] = binner
            self._collector.record_events(len(events))
            try:
                frames = binner.push(events)
                if packet.end_of_sample:
                    flushed = binner.flush()
                    frames = np.concatenate([frames, flushed]) if len(frames) else flushed
                    del binners[packet.sample_id]
            except EventFormatError as exc:
                self._fail(context, "invalid-argument", grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            result = self._run(context, frames, active) if len(frames) else _empty_result()
            reply = self._reply(packet.seq, active, result, False)
            sample = state.add(context, packet.sample_id, result, packet.end_of_sample)
            if sample is not None:
                reply.sample.CopyFrom(sample)
            if len(frames):
                self._collector.record(len(frames), result, time.perf_counter() - started)
            yield reply

    def _binner(
        self, context: grpc.ServicerContext, packet: inference_pb2.EventPacket, active: Loaded
    ) -> _Binner:
        height, width, channels = active.program.input.shape
        if packet.binning == BINNING_NDIGITS:
            return _WholeSample((height, width, channels))
        if packet.binning:
            self._fail(
                context,
                "invalid-argument",
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown binning {packet.binning!r}: use '' (time windows) or {BINNING_NDIGITS!r}",
            )
        try:
            return _Windows(
                FrameAccumulator(
                    (packet.sensor_width or width, packet.sensor_height or height, channels),
                    time_window_us=packet.time_window_us or self._event_window_us,
                    bits=active.program.input.bits,
                )
            )
        except EventFormatError as exc:
            self._fail(context, "invalid-argument", grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def Status(
        self, request: inference_pb2.StatusRequest, context: grpc.ServicerContext
    ) -> inference_pb2.AgentStatus:
        return self._status()
