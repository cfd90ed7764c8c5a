"""A hand-driven Connect stream: an impersonator, a flood or a broken agent, message by message."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import grpc

from spikefleet.v1 import fleet_pb2, fleet_pb2_grpc

_END = object()


class RawAgent:
    """Sends exactly what the test queues and records everything the server answers."""

    def __init__(
        self,
        address: str,
        agent_id: str,
        *,
        token: str = "",
        channel: grpc.Channel | None = None,
    ) -> None:
        self._own_channel = channel is None
        self.channel = channel or grpc.insecure_channel(address)
        self._outbox: queue.Queue[object] = queue.Queue()
        self.received: list[fleet_pb2.ServerMessage] = []
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        self._changed = threading.Condition()
        metadata: Sequence[tuple[str, str]] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self.send(fleet_pb2.AgentMessage(register=fleet_pb2.Register(agent_id=agent_id)))
        self.call = fleet_pb2_grpc.FleetStub(self.channel).Connect(
            self._requests(), metadata=metadata
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _requests(self) -> Iterator[fleet_pb2.AgentMessage]:
        while (item := self._outbox.get()) is not _END:
            assert isinstance(item, fleet_pb2.AgentMessage)
            yield item

    def _read(self) -> None:
        try:
            for message in self.call:
                with self._changed:
                    self.received.append(message)
                    self._changed.notify_all()
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.ended.set()
            with self._changed:
                self._changed.notify_all()

    def send(self, message: fleet_pb2.AgentMessage) -> None:
        self._outbox.put(message)

    def telemetry(self, **fields: object) -> None:
        self.send(fleet_pb2.AgentMessage(telemetry=fleet_pb2.TelemetryBatch(**fields)))  # type: ignore[arg-type]

    def acks(self) -> list[fleet_pb2.TelemetryAck]:
        with self._changed:
            return [m.telemetry_ack for m in self.received if m.HasField("telemetry_ack")]

    def wait_acks(self, count: int, timeout: float = 30.0) -> list[fleet_pb2.TelemetryAck]:
        """The first ``count`` telemetry acks (fails if the stream ends or times out first)."""
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    len([m for m in self.received if m.HasField("telemetry_ack")]) >= count
                    or self.ended.is_set()
                ),
                timeout,
            )
        acks = self.acks()
        assert len(acks) >= count, f"{len(acks)} of {count} acks; stream error: {self.error}"
        return acks[:count]

    def registered(self, timeout: float = 30.0) -> fleet_pb2.Registered:
        with self._changed:
            self._changed.wait_for(
                lambda: any(m.HasField("registered") for m in self.received) or self.ended.is_set(),
                timeout,
            )
            for message in self.received:
                if message.HasField("registered"):
                    return message.registered
        raise AssertionError(f"never registered: {self.error}")

    def close(self) -> None:
        self._outbox.put(_END)
        self.call.cancel()
        self.ended.wait(10)
        if self._own_channel:
            self.channel.close()

    def __enter__(self) -> RawAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
