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
from dataclasses import dataclass, field, replace
from typing import NoReturn

import grpc
import numpy as np

from spikefleet.errors import EventFormatError, FrameError
from spikefleet.events import EVENT_DTYPE, InputSpec, InputSpecError
from spikefleet.events.binning import BinningLimitError, SpecBinner
from spikefleet.events.decision import Decider
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


class _LimitExceeded(Exception):
    """A client-steerable allocation would pass a configured bound (RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True)
class EventLimits:
    """Bounds on what one StreamEvents client can make the agent allocate.

    Each is an ``[inference]`` key of the agent config; a refusal names it."""

    max_frames_per_packet: int = 256
    max_sensor_pixels: int = 4096 * 4096
    max_stream_bytes: int = 64 * 1024 * 1024  # buffered events and filter state, per stream

    def frames_error(self, exc: BinningLimitError) -> _LimitExceeded:
        if exc.limit == "max_frames_per_packet":
            return _LimitExceeded(f"{exc} (inference.max_frames_per_packet)")
        return _LimitExceeded(
            f"{exc}: this stream may buffer at most {self.max_stream_bytes} bytes "
            "(inference.max_stream_bytes)"
        )


class _EventSample:
    """One open sample (or the live stream, sample id ""): its binner and decision."""

    def __init__(self, spec: InputSpec, sha256: str, limits: EventLimits, budget: int) -> None:
        self.spec = spec
        self.sha256 = sha256
        self.binner = SpecBinner(
            spec,
            max_frames=limits.max_frames_per_packet,
            max_events=max(budget, 0) // 16,
            max_bytes=limits.max_stream_bytes,
        )
        self.decider = Decider(spec)


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
    if 0 in shape:
        raise FrameError(
            f"shape {list(shape)} has an empty axis: send at least one frame of the program's "
            "input shape (N >= 1)"
        )
    expected = math.prod(shape)
    if len(batch.frames) != expected:
        raise FrameError(
            f"frames holds {len(batch.frames)} bytes but shape {list(shape)} needs {expected} "
            "(one uint8 per value, C order)"
        )
    return np.frombuffer(batch.frames, dtype=np.uint8).reshape(shape)


_REFUSALS = (
    FrameError,
    EventFormatError,
    InputSpecError,
    NoProgramError,
    _TooManySamples,
    _LimitExceeded,
)


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
        event_limits: EventLimits | None = None,
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
        self._limits = event_limits or EventLimits()
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
        elif isinstance(exc, _TooManySamples | _LimitExceeded):
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
        """Events binned by the program's input spec, answered per its decision rule.

        Each sample id (the live stream is id "") has its own binner; a reply
        covers the frames its packet completed. When the client half-closes,
        the live stream's last windows are flushed into one more reply."""
        samples: dict[str, _EventSample] = {}
        last_seq = 0
        try:
            async for packet in request_iterator:
                started = time.perf_counter()
                last_seq = packet.seq
                if len(packet.events) % EVENT_DTYPE.itemsize:
                    raise EventFormatError(
                        f"events holds {len(packet.events)} bytes, not a multiple of the "
                        f"{EVENT_DTYPE.itemsize}-byte EVENT_DTYPE record "
                        "(x i16, y i16, t i64, p bool)"
                    )
                events = np.frombuffer(packet.events, dtype=EVENT_DTYPE)
                active = self._runtime.current()
                self._collector.record_events(len(events))
                sample = self._sample(samples, packet, active)
                try:
                    frames = sample.binner.push(events).frames
                    if packet.end_of_sample:
                        flushed = sample.binner.flush().frames
                        frames = np.concatenate([frames, flushed]) if len(frames) else flushed
                        del samples[packet.sample_id]
                except BinningLimitError as exc:
                    raise self._limits.frames_error(exc) from None
                self._check_memory(samples)
                yield await self._event_reply(
                    packet.seq,
                    packet.sample_id,
                    packet.end_of_sample,
                    sample,
                    frames,
                    active,
                    started,
                )
            live = samples.pop("", None)
            if live is not None and (live.binner.events_in or live.binner.frames_out):
                started = time.perf_counter()
                active = self._runtime.current()
                try:
                    frames = live.binner.flush().frames
                except BinningLimitError as exc:
                    raise self._limits.frames_error(exc) from None
                yield await self._event_reply(last_seq + 1, "", True, live, frames, active, started)
        except _REFUSALS as exc:
            await self._refuse(context, exc)

    async def _event_reply(
        self,
        seq: int,
        sample_id: str,
        end: bool,
        sample: _EventSample,
        frames: np.ndarray,
        active: Loaded,
        started: float,
    ) -> inference_pb2.Predictions:
        result = await self._infer(frames, active) if len(frames) else _empty_result()
        reply = self._reply(seq, active, result, False)
        reply.decision = sample.spec.decision.value
        reply.decisions.extend(sample.decider.add(result.scores).tolist())
        if end:
            sums = sample.decider.sums
            reply.sample.CopyFrom(
                inference_pb2.SampleResult(
                    sample_id=sample_id,
                    predicted_class=sample.decider.predicted,
                    frames=sample.decider.frames,
                    scores=[] if sums is None else sums.tolist(),
                )
            )
        if len(frames):
            self._collector.record(len(frames), result, time.perf_counter() - started)
        return reply

    def _check_memory(self, samples: dict[str, _EventSample]) -> None:
        held = sum(s.binner.nbytes for s in samples.values())
        if held > self._limits.max_stream_bytes:
            raise _LimitExceeded(
                f"this stream holds {held} bytes of buffered events and filter state over "
                f"{len(samples)} open sample(s), more than inference.max_stream_bytes "
                f"({self._limits.max_stream_bytes}): close samples sooner, or use shorter windows"
            )

    def _sample(
        self, samples: dict[str, _EventSample], packet: inference_pb2.EventPacket, active: Loaded
    ) -> _EventSample:
        sample = samples.get(packet.sample_id)
        if sample is not None and sample.sha256 == active.sha256:
            return sample
        if sample is None and len(samples) >= self._max_open:
            raise _TooManySamples(
                f"{self._max_open} samples are open on this stream: "
                "close samples with end_of_sample (inference.max_open_samples)"
            )
        spec = self._stream_spec(packet, active)
        if sample is not None and sample.spec == spec:
            sample.sha256 = active.sha256  # same frames for the new program: keep the windows
            return sample
        held = sum(s.binner.nbytes for key, s in samples.items() if key != packet.sample_id)
        budget = self._limits.max_stream_bytes - held
        filters = (spec.denoise_filter_time is not None) + (spec.refractory_delta is not None)
        state = spec.sensor_size[0] * spec.sensor_size[1] * 8 * filters
        if state > budget:  # refuse before allocating the filters' per-pixel memory
            raise _LimitExceeded(
                f"this sample's filters need {state} bytes of per-pixel state; with "
                f"{len(samples)} open sample(s) the stream would pass inference.max_stream_bytes "
                f"({self._limits.max_stream_bytes}): close samples sooner"
            )
        sample = samples[packet.sample_id] = _EventSample(spec, active.sha256, self._limits, budget)
        self._check_memory(samples)
        return sample

    def _stream_spec(self, packet: inference_pb2.EventPacket, active: Loaded) -> InputSpec:
        """The program's spec, with this stream's overrides where the program permits them."""
        program = active.program
        spec = program.input_spec
        if spec is None:
            spec = replace(program.effective_input_spec, time_window=self._event_window_us)
        if not packet.sample_id and spec.per_sample_only:
            raise EventFormatError(
                f"this program's input spec bins {spec.binning.value} per sample: send "
                "sample_id and end_of_sample with the events"
            )
        changes: dict[str, object] = {}
        width, height, polarities = spec.sensor_size
        sensor = (packet.sensor_width or width, packet.sensor_height or height, polarities)
        if sensor != spec.sensor_size:
            changes["sensor_size"] = sensor
        if packet.time_window_us and packet.time_window_us != spec.time_window:
            if spec.time_window is None:
                raise EventFormatError(
                    f"time_window_us applies to time binning; this program's spec bins by "
                    f"{spec.binning.value}: leave time_window_us at 0"
                )
            changes["time_window"] = packet.time_window_us
            changes["overlap"] = 0
        asked = sorted(changes.keys() - {"overlap"})  # overlap only follows the window
        if changes and not spec.allow_stream_override:
            raise EventFormatError(
                f"this program's input spec fixes {', '.join(asked)} and does not "
                "permit per-stream overrides (allow_stream_override): leave sensor_width, "
                "sensor_height and time_window_us at 0"
            )
        pixels = sensor[0] * sensor[1]
        if pixels > self._limits.max_sensor_pixels:
            raise _LimitExceeded(
                f"a {sensor[0]}x{sensor[1]} sensor has {pixels} pixels, more than "
                f"inference.max_sensor_pixels ({self._limits.max_sensor_pixels})"
            )
        for key in asked:
            self._collector.override(key)
        if not packet.sample_id and spec.end_time is not None:
            changes["end_time"] = None  # a live stream has no end
        if not changes:
            return spec
        try:
            overridden = replace(spec, **changes)  # type: ignore[arg-type]
        except InputSpecError as exc:
            raise EventFormatError(f"stream override: {exc}") from None
        if overridden.input_shape != tuple(program.input.shape):
            raise EventFormatError(
                f"a {sensor[0]}x{sensor[1]} sensor makes frames of {overridden.input_shape} "
                f"(H, W, C) but the program takes {tuple(program.input.shape)}"
            )
        return overridden

    async def Status(
        self, request: inference_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.AgentStatus:
        return self._status()
