"""Client of an agent's local inference API: frames or events in, predictions out.

Frames travel as raw uint8 bytes plus their shape. ``stream()`` sends batches
from a generator while answers come back, so a producer is paced by the
agent (gRPC flow control) rather than by round trips.

``AsyncAgentClient`` is the same API for asyncio programs: on grpc.aio a
stream's requests and answers are coroutines on the caller's event loop, where
the sync client hands every request to a gRPC thread (somewhat less CPU per
message; gRPC's own per-message cost dominates either way).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np

from spikefleet.client.tls import ClientTLS, bearer_metadata, open_channel
from spikefleet.errors import AgentRequestError, EngineError, FrameError
from spikefleet.v1 import inference_pb2, inference_pb2_grpc

T = TypeVar("T")


@dataclass
class SampleResult:
    sample_id: str
    predicted_class: int
    frames: int
    scores: np.ndarray


@dataclass
class Prediction:
    seq: int
    classes: np.ndarray  # int64, top-1 per frame
    program_sha256: str
    outputs: np.ndarray | None = None
    sample: SampleResult | None = None
    decision: str = ""  # StreamEvents: the program's decision rule
    decisions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per frame


@dataclass
class AgentStatus:
    agent_id: str
    backend: str
    program_sha256: str
    previous_sha256: str
    program_name: str
    input_shape: tuple[int, ...]
    input_bits: int
    labels: list[str] = field(default_factory=list)
    connected: bool = False
    frames: int = 0
    spooled_batches: int = 0
    shadow_sha256: str = ""
    version: str = ""


@dataclass
class FrameBatch:
    """One message of a stream: frames (N, H, W, C) and, optionally, the sample they belong to."""

    frames: np.ndarray
    sample_id: str = ""
    end_of_sample: bool = False


def _to_error(exc: grpc.RpcError, address: str) -> Exception:
    code = exc.code() if hasattr(exc, "code") else None
    name = getattr(code, "name", "UNKNOWN")
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return FrameError(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return EngineError(details)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"agent at {address} is unreachable ({details}): is spikefleet-agent running?"
    return AgentRequestError(f"{name}: {details}", name)


def _batch(
    frames: np.ndarray, seq: int, sample_id: str, end: bool, outputs: bool
) -> inference_pb2.FrameBatch:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise FrameError("frames must be a uint8 numpy array: cast with .astype(np.uint8)")
    if frames.ndim == 3:
        frames = frames[None]
    return inference_pb2.FrameBatch(
        frames=np.ascontiguousarray(frames).tobytes(),
        shape=frames.shape,
        seq=seq,
        sample_id=sample_id,
        end_of_sample=end,
        return_outputs=outputs,
    )


def _request(item: np.ndarray | FrameBatch, seq: int, outputs: bool) -> inference_pb2.FrameBatch:
    if isinstance(item, FrameBatch):
        return _batch(item.frames, seq, item.sample_id, item.end_of_sample, outputs)
    return _batch(item, seq, "", False, outputs)


def _channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def _status(reply: inference_pb2.AgentStatus) -> AgentStatus:
    return AgentStatus(
        agent_id=reply.agent_id,
        backend=reply.backend,
        program_sha256=reply.program_sha256,
        previous_sha256=reply.previous_sha256,
        program_name=reply.program_name,
        input_shape=tuple(reply.input_shape),
        input_bits=reply.input_bits,
        labels=list(reply.labels),
        connected=reply.connected,
        frames=reply.frames,
        spooled_batches=reply.spooled_batches,
        shadow_sha256=reply.shadow_sha256,
        version=reply.version,
    )


def _prediction(reply: inference_pb2.Predictions) -> Prediction:
    outputs = None
    if reply.output_dtype:
        outputs = np.frombuffer(reply.outputs, dtype=reply.output_dtype).reshape(
            tuple(reply.output_shape)
        )
    sample = None
    if reply.HasField("sample"):
        sample = SampleResult(
            reply.sample.sample_id,
            reply.sample.predicted_class,
            reply.sample.frames,
            np.asarray(reply.sample.scores, np.float32),
        )
    return Prediction(
        seq=reply.seq,
        classes=np.fromiter(reply.classes, np.int64, len(reply.classes)),
        program_sha256=reply.program_sha256,
        outputs=outputs,
        sample=sample,
        decision=reply.decision,
        decisions=np.fromiter(reply.decisions, np.int64, len(reply.decisions)),
    )


class AgentClient:
    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        max_message_bytes: int = 16 * 1024 * 1024,
        tls: ClientTLS | bool | None = None,
    ) -> None:
        """``tls``: None (default) is TLS unless the address is loopback or a unix socket;
        a :class:`ClientTLS` names the agent's CA and a client certificate; False is
        plaintext, explicitly."""
        self.address = address
        self._channel = open_channel(address, tls, _channel_options(max_message_bytes))
        self._stub = inference_pb2_grpc.InferenceStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = bearer_metadata(token)
        self._timeout = timeout

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def infer(self, frames: np.ndarray, *, return_outputs: bool = False) -> Prediction:
        """One batch of frames (N, H, W, C) or one frame (H, W, C), one answer."""
        request = _batch(frames, 0, "", True, return_outputs)
        try:
            reply = self._stub.Infer(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise _to_error(exc, self.address) from None
        return _prediction(reply)

    def stream(
        self, batches: Iterable[np.ndarray | FrameBatch], *, return_outputs: bool = False
    ) -> Iterator[Prediction]:
        """Predictions for each batch, in order; batches are sent while answers arrive."""

        def requests() -> Iterator[inference_pb2.FrameBatch]:
            for seq, item in enumerate(batches):
                yield _request(item, seq, return_outputs)

        call: Any = self._stub.Stream(requests(), metadata=self._metadata)
        try:
            for reply in call:
                yield _prediction(reply)
        except grpc.RpcError as exc:
            raise _to_error(exc, self.address) from None
        finally:
            call.cancel()

    def stream_events(
        self,
        packets: Iterable[np.ndarray],
        *,
        sample_id: str = "",
        time_window_us: int = 0,
        end_of_sample: bool = True,
    ) -> Iterator[Prediction]:
        """Predictions for raw EVENT_DTYPE packets; the last packet closes the sample.

        The agent makes frames by the program's input spec and answers by its
        decision rule; ``sample_id=""`` is the live stream (windows from the
        spec, no sample boundaries). ``time_window_us`` overrides the spec's
        window where the program permits it."""
        from spikefleet.events import as_events

        def requests() -> Iterator[inference_pb2.EventPacket]:
            previous: np.ndarray | None = None
            seq = 0
            for packet in packets:
                if previous is not None:
                    yield self._packet(previous, seq, sample_id, time_window_us, False)
                    seq += 1
                previous = as_events(packet)
            if previous is not None:
                yield self._packet(previous, seq, sample_id, time_window_us, end_of_sample)

        call: Any = self._stub.StreamEvents(requests(), metadata=self._metadata)
        try:
            for reply in call:
                yield _prediction(reply)
        except grpc.RpcError as exc:
            raise _to_error(exc, self.address) from None
        finally:
            call.cancel()

    @staticmethod
    def _packet(
        events: np.ndarray, seq: int, sample_id: str, window: int, end: bool
    ) -> inference_pb2.EventPacket:
        return inference_pb2.EventPacket(
            events=np.ascontiguousarray(events).tobytes(),
            seq=seq,
            sample_id=sample_id,
            end_of_sample=end,
            time_window_us=window,
        )

    def status(self) -> AgentStatus:
        try:
            reply = self._stub.Status(
                inference_pb2.StatusRequest(), metadata=self._metadata, timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise _to_error(exc, self.address) from None
        return _status(reply)


HEADERS_WAIT_S = 1.0


async def _headers(call: Any) -> None:
    """Wait (boundedly) for the agent's response headers before the first write.

    Agents send them as a stream opens, so a refused stream (a wrong token) ends
    here, before a write could race grpc.aio into reporting INTERNAL instead of
    the refusal. Agents older than that send them with the first answer: after
    HEADERS_WAIT_S the stream goes ahead without them."""
    headers = asyncio.ensure_future(call.initial_metadata())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(headers), HEADERS_WAIT_S)


async def _sent(call: Any, request: inference_pb2.FrameBatch | None) -> bool:
    """Write one request (None: close the sending side); False once the call has ended,
    whose status the reading side then reports."""
    try:
        if request is None:
            await call.done_writing()
        else:
            await call.write(request)
    except (grpc.RpcError, asyncio.InvalidStateError):
        return False
    return True


async def _items(batches: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(batches, AsyncIterable):
        async for item in batches:
            yield item
    else:
        for item in batches:
            yield item


class AsyncAgentClient:
    """The agent's inference API on grpc.aio; use it inside a running event loop.

    ``stream`` takes a plain or an async iterable: a producer that waits for its
    frames (a camera, a timer) should be async, since a plain one runs on the loop."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        max_message_bytes: int = 16 * 1024 * 1024,
        tls: ClientTLS | bool | None = None,
    ) -> None:
        self.address = address
        self._channel = open_channel(address, tls, _channel_options(max_message_bytes), aio=True)
        self._stub = inference_pb2_grpc.InferenceStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = bearer_metadata(token)
        self._timeout = timeout

    async def __aenter__(self) -> AsyncAgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def infer(self, frames: np.ndarray, *, return_outputs: bool = False) -> Prediction:
        """One batch of frames (N, H, W, C) or one frame (H, W, C), one answer."""
        request = _batch(frames, 0, "", True, return_outputs)
        try:
            reply = await self._stub.Infer(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise _to_error(exc, self.address) from None
        return _prediction(reply)

    async def stream(
        self,
        batches: Iterable[np.ndarray | FrameBatch] | AsyncIterable[np.ndarray | FrameBatch],
        *,
        return_outputs: bool = False,
    ) -> AsyncIterator[Prediction]:
        """Predictions for each batch, in order; batches are sent while answers arrive."""

        async def requests() -> AsyncIterator[inference_pb2.FrameBatch]:
            seq = 0
            async for item in _items(batches):
                yield _request(item, seq, return_outputs)
                seq += 1

        async for prediction in self._duplex(self._stub.Stream, requests()):
            yield prediction

    async def stream_events(
        self,
        packets: Iterable[np.ndarray] | AsyncIterable[np.ndarray],
        *,
        sample_id: str = "",
        time_window_us: int = 0,
        end_of_sample: bool = True,
    ) -> AsyncIterator[Prediction]:
        """Predictions for raw EVENT_DTYPE packets; the last packet closes the sample
        (the same contract as :meth:`AgentClient.stream_events`)."""
        from spikefleet.events import as_events

        async def requests() -> AsyncIterator[inference_pb2.EventPacket]:
            previous: np.ndarray | None = None
            seq = 0
            async for packet in _items(packets):
                if previous is not None:
                    yield AgentClient._packet(previous, seq, sample_id, time_window_us, False)
                    seq += 1
                previous = as_events(packet)
            if previous is not None:
                yield AgentClient._packet(previous, seq, sample_id, time_window_us, end_of_sample)

        async for prediction in self._duplex(self._stub.StreamEvents, requests()):
            yield prediction

    async def _duplex(self, method: Any, requests: AsyncIterator[Any]) -> AsyncIterator[Prediction]:
        """Write ``requests`` while reading answers; the request side's own failure (a
        bad array, a failing iterable) is raised as itself, a refusal as the agent's."""
        call: Any = method(metadata=self._metadata)

        async def write() -> None:
            try:
                await _headers(call)
                async for request in requests:
                    if not await _sent(call, request):
                        return
                await _sent(call, None)
            except BaseException:
                call.cancel()  # our side failed (the iterable, an array): no answers can follow
                raise

        writer = asyncio.create_task(write())
        try:
            async for reply in call:
                yield _prediction(reply)
            await writer
        except (grpc.RpcError, asyncio.CancelledError) as exc:
            failed = writer.exception() if writer.done() and not writer.cancelled() else None
            if failed is not None:
                raise failed from None  # the request side failed first (e.g. a bad array)
            if isinstance(exc, grpc.RpcError):
                raise _to_error(exc, self.address) from None
            raise
        finally:
            writer.cancel()
            call.cancel()

    async def status(self) -> AgentStatus:
        try:
            reply = await self._stub.Status(
                inference_pb2.StatusRequest(), metadata=self._metadata, timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise _to_error(exc, self.address) from None
        return _status(reply)
