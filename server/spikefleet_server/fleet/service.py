"""The Fleet servicer: one Connect stream per agent, program downloads by sha256.

Each Connect runs two threads: the gRPC handler thread yields what the
session's queue holds (Registered, Assignments, telemetry acks) and a reader
thread consumes what the agent sends. ``assign()`` persists the desired
program first and then pushes it to the agent if it is connected; agents that
are away get it when they register again.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
import structlog
from prometheus_client import Counter, Gauge

from spikefleet.errors import ProgramNotFoundError
from spikefleet.v1 import fleet_pb2, fleet_pb2_grpc
from spikefleet_server.fleet.ingest import TelemetryWriter
from spikefleet_server.fleet.store import AgentRecord, AssignmentRecord, FleetStore

log = structlog.get_logger(__name__)

CHUNK = 256 * 1024
LAST_SEEN_WRITE_S = 30.0

CONNECTED = Gauge("spikefleet_fleet_connected_agents", "Agents with an open control stream")
TELEMETRY = Counter("spikefleet_fleet_telemetry_batches", "Telemetry batches stored")
INSTALLS = Counter("spikefleet_fleet_install_reports", "Install reports", ["status"])


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("grpc's abort raises")


@dataclass
class FleetEvent:
    """What subscribers hear: kind is connected, disconnected, install or telemetry."""

    kind: str
    agent_id: str
    data: dict[str, Any] = field(default_factory=dict)


class _Session:
    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.registered = False  # set once its Register is in the store
        self.last_beat: tuple[str, str, str] | None = None
        self.last_beat_written = 0.0
        self.outbox: queue.Queue[fleet_pb2.ServerMessage | None] = queue.Queue()

    def send(self, message: fleet_pb2.ServerMessage) -> None:
        self.outbox.put(message)

    def close(self) -> None:
        self.outbox.put(None)


class FleetService(fleet_pb2_grpc.FleetServicer):
    """``programs(sha256) -> signed bytes`` is the registry's ``get_bytes``."""

    def __init__(
        self,
        store: FleetStore,
        programs: Callable[[str], bytes],
        *,
        heartbeat_interval_ms: int = 5000,
    ) -> None:
        self.store = store
        self._programs = programs
        self._heartbeat_ms = heartbeat_interval_ms
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[FleetEvent], None]] = []
        self._readers: set[threading.Thread] = set()
        self._handlers = 0
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self._writer = TelemetryWriter(store)
        store.mark_all_disconnected()

    def close(self, timeout: float = 5.0) -> None:
        """End every session and wait for their readers (call after the gRPC server stopped,
        before the database closes)."""
        with self._lock:
            self._closed = True
            sessions = list(self._sessions.values())
            readers = list(self._readers)
        for session in sessions:
            session.close()
        for reader in readers:
            reader.join(timeout)
        with self._idle:
            self._idle.wait_for(lambda: self._handlers == 0, timeout)
        self._writer.close(timeout)

    # -- the API the rest of the server uses -----------------------------------

    def assign(
        self, agent_id: str, sha256: str, *, shadow_sha256: str = "", rollback: bool = False
    ) -> AssignmentRecord:
        """Make ``sha256`` the desired program of ``agent_id`` (pushed now if connected)."""
        record = self.store.assign(agent_id, sha256, shadow_sha256, rollback)
        with self._lock:
            session = self._sessions.get(agent_id)
            if session is not None and session.registered:
                session.send(fleet_pb2.ServerMessage(assignment=record.to_proto()))
        log.info("fleet.assigned", agent_id=agent_id, sha256=sha256, generation=record.generation)
        return record

    def agents(self) -> list[AgentRecord]:
        return self.store.agents()

    def connected(self) -> list[str]:
        with self._lock:
            return sorted(a for a, session in self._sessions.items() if session.registered)

    def subscribe(self, callback: Callable[[FleetEvent], None]) -> Callable[[], None]:
        """Call ``callback`` for every fleet event (from gRPC threads: keep it quick)."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, event: FleetEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("fleet.subscriber_failed", kind=event.kind)

    # -- gRPC ------------------------------------------------------------------

    def Connect(
        self, request_iterator: Iterator[fleet_pb2.AgentMessage], context: grpc.ServicerContext
    ) -> Iterator[fleet_pb2.ServerMessage]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "register":
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first message on Connect must be Register (agent_id, labels, inventory, ...)",
            )
        register = first.register
        agent_id = register.agent_id
        if not agent_id:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Register.agent_id is empty")

        session = _Session(agent_id)
        with self._lock:
            if self._closed:
                _abort(context, grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            self._handlers += 1
            old = self._sessions.get(agent_id)
            self._sessions[agent_id] = session
        try:
            if old is not None:
                old.close()  # the same agent reconnected: its old stream ends
            self.store.register(register)
            context.add_callback(session.close)
            registered = fleet_pb2.Registered(
                agent_id=agent_id,
                last_telemetry_seq=self.store.last_telemetry_seq(agent_id),
                heartbeat_interval_ms=self._heartbeat_ms,
            )
            with self._lock:  # Registered goes out before any pushed Assignment
                session.send(fleet_pb2.ServerMessage(registered=registered))
                session.registered = True
                CONNECTED.set(len(self._sessions))
            desired = self.store.assignment(agent_id)
            if desired is not None:
                session.send(fleet_pb2.ServerMessage(assignment=desired.to_proto()))
            log.info("fleet.connected", agent_id=agent_id, program=register.program_sha256[:12])
            self._emit(
                FleetEvent("connected", agent_id, {"program_sha256": register.program_sha256})
            )

            reader = threading.Thread(
                target=self._read, args=(session, request_iterator), name=f"fleet-{agent_id}"
            )
            reader.daemon = True
            with self._lock:
                self._readers.add(reader)
            reader.start()
            while True:
                message = session.outbox.get()
                if message is None:
                    break
                yield message
        finally:
            with self._lock:
                current = self._sessions.get(agent_id) is session
                if current:
                    del self._sessions[agent_id]
                CONNECTED.set(len(self._sessions))
                closed = self._closed
            try:
                if current and not closed:
                    self.store.set_connected(agent_id, False)
                    log.info("fleet.disconnected", agent_id=agent_id)
                    self._emit(FleetEvent("disconnected", agent_id))
            finally:
                with self._idle:
                    self._handlers -= 1
                    self._idle.notify_all()

    def _read(self, session: _Session, requests: Iterator[fleet_pb2.AgentMessage]) -> None:
        agent_id = session.agent_id
        try:
            for message in requests:
                if self._closed:
                    break
                kind = message.WhichOneof("kind")
                if kind == "heartbeat":
                    self._heartbeat(session, message.heartbeat)
                elif kind == "telemetry":
                    self._telemetry(session, message.telemetry)
                elif kind == "install":
                    self._install(agent_id, message.install)
        except grpc.RpcError:
            pass  # the stream ended under us; the handler cleans up
        except Exception:
            log.exception("fleet.read_failed", agent_id=agent_id)
        finally:
            session.close()
            with self._lock:
                self._readers.discard(threading.current_thread())

    def _heartbeat(self, session: _Session, beat: fleet_pb2.Heartbeat) -> None:
        """Write when the agent's state changed, else refresh last_seen at most every
        LAST_SEEN_WRITE_S: each write is an fsync, and a fleet heartbeats constantly."""
        state = (beat.program_sha256, beat.health, beat.shadow_sha256)
        now = time.monotonic()
        if state != session.last_beat or now - session.last_beat_written >= LAST_SEEN_WRITE_S:
            self.store.heartbeat(session.agent_id, beat)
            session.last_beat, session.last_beat_written = state, now

    def _telemetry(self, session: _Session, batch: fleet_pb2.TelemetryBatch) -> None:
        def stored(new: bool) -> None:
            if new:
                TELEMETRY.inc()
                self._emit(FleetEvent("telemetry", session.agent_id, {"batch": batch}))
            ack = fleet_pb2.TelemetryAck(seq=batch.seq)
            session.send(fleet_pb2.ServerMessage(telemetry_ack=ack))

        self._writer.submit(session.agent_id, batch, stored)

    def _install(self, agent_id: str, report: fleet_pb2.InstallReport) -> None:
        # the agent's state first: whoever sees the install record sees its effect too
        if report.status in (
            fleet_pb2.InstallReport.INSTALLED,
            fleet_pb2.InstallReport.ROLLED_BACK,
        ):
            self.store.set_program(agent_id, report.sha256)
        if report.status == fleet_pb2.InstallReport.ROLLED_BACK:
            self.store.settle_rollback(agent_id, report.generation, report.sha256)
        record = self.store.record_install(agent_id, report)
        INSTALLS.labels(status=record.status).inc()
        log.info(
            "fleet.install_report",
            agent_id=agent_id,
            sha256=report.sha256[:12],
            status=record.status,
            reason=report.reason,
        )
        self._emit(FleetEvent("install", agent_id, {"record": record}))

    def FetchProgram(
        self, request: fleet_pb2.FetchProgramRequest, context: grpc.ServicerContext
    ) -> Iterator[fleet_pb2.ProgramChunk]:
        try:
            data = self._programs(request.sha256)
        except (KeyError, ProgramNotFoundError):
            _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no program with sha256 {request.sha256!r} in the registry",
            )
        for offset in range(0, max(len(data), 1), CHUNK):
            chunk = fleet_pb2.ProgramChunk(data=data[offset : offset + CHUNK])
            if offset == 0:
                chunk.total_size = len(data)
            yield chunk


class FleetAdminService(fleet_pb2_grpc.FleetAdminServicer):
    """Operator assignments (admin role): checks the program exists, then ``fleet.assign``."""

    def __init__(self, fleet: FleetService, programs: Callable[[str], bytes]) -> None:
        self._fleet = fleet
        self._programs = programs

    def Assign(
        self, request: fleet_pb2.AssignRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.AssignResponse:
        if not request.agent_id:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "agent_id is empty")
        if not request.rollback and not request.sha256:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "give the sha256 of a registry program, or rollback=true",
            )
        for sha in (request.sha256, request.shadow_sha256):
            if not sha:
                continue
            try:
                self._programs(sha)
            except (KeyError, ProgramNotFoundError):
                _abort(
                    context,
                    grpc.StatusCode.NOT_FOUND,
                    f"no program with sha256 {sha!r} in the registry "
                    "(see 'spikefleet programs list')",
                )
        record = self._fleet.assign(
            request.agent_id,
            request.sha256,
            shadow_sha256=request.shadow_sha256,
            rollback=request.rollback,
        )
        return fleet_pb2.AssignResponse(
            generation=record.generation,
            connected=request.agent_id in self._fleet.connected(),
        )
