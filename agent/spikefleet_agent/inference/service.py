"""The Inference servicer (grpc.aio): frames or events in, predictions out.

Everything runs as coroutines on the server's one event loop, so a message
costs no thread handoff. ``Stream`` reads ahead into a small per-stream queue
and runs the consecutive queued messages as one engine batch, still answering
each message on its own and in order: a pipelined single-frame client pays the
engine's per-call cost once per batch instead of once per frame.

Flow control: a stream's queue holds at most ``max_queued_frames`` frames;
when it is full the reader stops reading, so a client that sends faster than
the device runs is held back by HTTP/2 flow control instead of queueing in
agent memory. Messages are capped in size, streams in number, and open samples
per stream in count.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
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


class _TooManySamples(Exception):
    """A stream opened more samples than it may hold (RESOURCE_EXHAUSTED)."""


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
        self, sample_id: str, result: RunResult, end: bool
    ) -> inference_pb2.SampleResult | None:
        if not sample_id:
            return None
        sample = self.samples.get(sample_id)
        if sample is None:
            if len(self.samples) >= self.max_open:
                raise _TooManySamples(
                    f"{self.max_open} samples are open on this stream: "
                    "close samples with end_of_sample before starting new ones"
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


def _slice(result: RunResult, start: int, stop: int) -> RunResult:
    return RunResult(
        outputs=result.outputs[start:stop],
        scores=result.scores[start:stop],
        classes=result.classes[start:stop],
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


_REFUSALS = (FrameError, EventFormatError, NoProgramError, _TooManySamples)


def _frame_count(batch: inference_pb2.FrameBatch) -> int:
    return int(batch.shape[0]) if len(batch.shape) == 4 else 1


@dataclass
class _Queued:
    batch: inference_pb2.FrameBatch
    arrived: float
    frames: int = 0

    def __post_init__(self) -> None:
        self.frames = _frame_count(self.batch)


INLINE_BUDGET_S = 0.002
"""Engine batches expected to take longer than this run in a thread, so a slow
program cannot stall the loop (and every other stream's reads and writes)."""


class InferenceService(inference_pb2_grpc.InferenceServicer):
    """Coroutine handlers for one grpc.aio server; engine batches run on the loop, or in
    a thread when larger than ``inline_frames`` or expected to take longer than
    INLINE_BUDGET_S (the engine releases the GIL, so other streams keep moving
    meanwhile)."""

    def __init__(
        self,
        runtime: Runtime,
        collector: Collector,
        *,
        status: Callable[[], inference_pb2.AgentStatus],
        max_open_samples: int = 1024,
        event_window_us: int = 10_000,
        max_batch_frames: int = 64,
        max_queued_frames: int = 256,
        inline_frames: int = 64,
        workers: int = 8,
    ) -> None:
        self._runtime = runtime
        self._collector = collector
        self._status = status
        self._max_open = max_open_samples
        self._event_window_us = event_window_us
        self._max_batch_frames = max_batch_frames
        self._max_queued_frames = max_queued_frames
        self._inline_frames = inline_frames
        self._seconds_per_frame = 0.0  # running mean of the engine's time per frame
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def _refuse(self, context: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
        if isinstance(exc, NoProgramError):
            kind, code = "no-program", grpc.StatusCode.FAILED_PRECONDITION
        elif isinstance(exc, _TooManySamples):
            kind, code = "resource-exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED
        else:
            kind, code = "invalid-argument", grpc.StatusCode.INVALID_ARGUMENT
        self._collector.error(kind)
        await context.abort(code, str(exc))
        raise AssertionError("context.abort returned")  # grpc raises inside abort

    def _inline(self, frames: int) -> bool:
        return frames <= self._inline_frames and (
            frames * self._seconds_per_frame <= INLINE_BUDGET_S
        )

    def _run_engine(self, frames: np.ndarray, active: Loaded) -> RunResult:
        start = time.perf_counter()
        result = self._runtime.infer(frames, active)
        per_frame = (time.perf_counter() - start) / max(len(frames), 1)
        self._seconds_per_frame += 0.2 * (per_frame - self._seconds_per_frame)
        return result

    async def _infer(self, frames: np.ndarray, active: Loaded) -> RunResult:
        if self._inline(len(frames)):
            return self._run_engine(frames, active)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run_engine, frames, active)

    async def _answer(
        self, group: list[_Queued], state: _StreamState
    ) -> tuple[list[inference_pb2.Predictions], Exception | None]:
        """Small, fast batches run on the loop itself: measured, a thread handoff per
        batch cost more agent CPU than it saved by overlapping I/O."""
        frames = sum(item.frames for item in group)
        if self._inline(frames):
            return self._answer_now(group, state)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._answer_now, group, state)

    def _answer_now(
        self, group: list[_Queued], state: _StreamState
    ) -> tuple[list[inference_pb2.Predictions], Exception | None]:
        """Run consecutive messages as one engine batch; answer each one.

        Returns the answers of every message before the first bad one, and the
        error that bad message makes (to be raised once those answers are out)."""
        active = self._runtime.current()
        decoded: list[np.ndarray] = []
        failure: Exception | None = None
        for item in group:
            try:
                decoded.append(decode_frames(item.batch))
            except FrameError as exc:
                failure = exc
                break
        if not decoded:
            return [], failure
        frames = decoded[0] if len(decoded) == 1 else np.concatenate(decoded)
        try:
            result = self._run_engine(frames, active)
        except FrameError as exc:
            if len(decoded) == 1:
                return [], exc
            replies: list[inference_pb2.Predictions] = []
            for item in group[: len(decoded)]:  # find the bad message, answering those before it
                answered, failure = self._answer_now([item], state)
                replies.extend(answered)
                if failure is not None:
                    break
            return replies, failure
        replies = []
        latencies: list[float] = []
        done = time.perf_counter()
        start = 0
        for item, part_frames in zip(group, decoded, strict=False):
            stop = start + len(part_frames)
            part = result if len(decoded) == 1 else _slice(result, start, stop)
            batch = item.batch
            try:
                sample = state.add(batch.sample_id, part, batch.end_of_sample)
            except _TooManySamples as exc:
                failure = exc
                break
            reply = self._reply(batch.seq, active, part, batch.return_outputs)
            if sample is not None:
                reply.sample.CopyFrom(sample)
            replies.append(reply)
            latencies.append(done - item.arrived)
            start = stop
        answered_result = result if start == len(frames) else _slice(result, 0, start)
        self._collector.record_messages(start, answered_result, latencies)
        return replies, failure

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

    def _take(self, queue: deque[_Queued]) -> list[_Queued]:
        """The next engine batch: queued messages of one frame shape, up to max_batch_frames."""
        first = queue.popleft()
        group = [first]
        shape = tuple(first.batch.shape)[1:]
        frames = first.frames
        while queue:
            item = queue[0]
            if (
                frames + item.frames > self._max_batch_frames
                or tuple(item.batch.shape)[1:] != shape
            ):
                break
            group.append(queue.popleft())
            frames += item.frames
        return group

    async def Stream(
        self,
        request_iterator: AsyncIterator[inference_pb2.FrameBatch],
        context: grpc.aio.ServicerContext,
    ) -> None:
        state = _StreamState(self._max_open)
        queue: deque[_Queued] = deque()
        queued = 0
        finished = False
        arrived = asyncio.Event()
        room = asyncio.Event()

        async def read() -> None:
            nonlocal queued, finished
            try:
                while True:
                    while queued >= self._max_queued_frames:
                        room.clear()
                        await room.wait()
                    batch = await context.read()
                    if batch is grpc.aio.EOF:
                        return
                    item = _Queued(batch, time.perf_counter())
                    queue.append(item)
                    queued += item.frames
                    arrived.set()
            finally:
                finished = True
                arrived.set()

        await context.send_initial_metadata(())  # clients may wait for it before writing
        reader = asyncio.create_task(read())
        try:
            while queue or not finished:
                if not queue:
                    arrived.clear()
                    await arrived.wait()
                    continue
                group = self._take(queue)
                queued -= sum(item.frames for item in group)
                room.set()
                replies, failure = await self._answer(group, state)
                for reply in replies:
                    await context.write(reply)
                if failure is not None:
                    raise failure
            await reader  # re-raises a failed read
        except _REFUSALS as exc:
            await self._refuse(context, exc)
        finally:
            reader.cancel()

    async def Infer(
        self, request: inference_pb2.FrameBatch, context: grpc.aio.ServicerContext
    ) -> inference_pb2.Predictions:
        arrived = time.perf_counter()
        request.sample_id, request.end_of_sample = request.sample_id or "unary", True
        try:
            replies, failure = await self._answer([_Queued(request, arrived)], _StreamState(1))
            if failure is not None:
                raise failure
        except _REFUSALS as exc:
            await self._refuse(context, exc)
        return replies[0]

    async def StreamEvents(
        self,
        request_iterator: AsyncIterator[inference_pb2.EventPacket],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[inference_pb2.Predictions]:
        state = _StreamState(self._max_open)
        binners: dict[str, _Binner] = {}
        try:
            async for packet in request_iterator:
                started = time.perf_counter()
                if len(packet.events) % EVENT_DTYPE.itemsize:
                    raise EventFormatError(
                        f"events holds {len(packet.events)} bytes, not a multiple of the "
                        f"{EVENT_DTYPE.itemsize}-byte EVENT_DTYPE record "
                        "(x i16, y i16, t i64, p bool)"
                    )
                events = np.frombuffer(packet.events, dtype=EVENT_DTYPE)
                active = self._runtime.current()
                binner = binners.get(packet.sample_id)
                if binner is None:
                    if len(binners) >= self._max_open:
                        raise _TooManySamples(
                            f"{self._max_open} samples are open on this stream: "
                            "close samples with end_of_sample"
                        )
                    binner = binners[packet.sample_id] = self._binner(packet, active)
                self._collector.record_events(len(events))
                frames = binner.push(events)
                if packet.end_of_sample:
                    flushed = binner.flush()
                    frames = np.concatenate([frames, flushed]) if len(frames) else flushed
                    del binners[packet.sample_id]
                result = await self._infer(frames, active) if len(frames) else _empty_result()
                reply = self._reply(packet.seq, active, result, False)
                sample = state.add(packet.sample_id, result, packet.end_of_sample)
                if sample is not None:
                    reply.sample.CopyFrom(sample)
                if len(frames):
                    self._collector.record(len(frames), result, time.perf_counter() - started)
                yield reply
        except _REFUSALS as exc:
            await self._refuse(context, exc)

    def _binner(self, packet: inference_pb2.EventPacket, active: Loaded) -> _Binner:
        height, width, channels = active.program.input.shape
        if packet.binning == BINNING_NDIGITS:
            return _WholeSample((height, width, channels))
        if packet.binning:
            raise EventFormatError(
                f"unknown binning {packet.binning!r}: use '' (time windows) or {BINNING_NDIGITS!r}"
            )
        return _Windows(
            FrameAccumulator(
                (packet.sensor_width or width, packet.sensor_height or height, channels),
                time_window_us=packet.time_window_us or self._event_window_us,
                bits=active.program.input.bits,
            )
        )

    async def Status(
        self, request: inference_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.AgentStatus:
        return self._status()
