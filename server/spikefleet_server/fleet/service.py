"""The Fleet servicer: one Connect stream per agent, program downloads by sha256.

Connect is a coroutine on the server's asyncio loop (a thousand agents are a
thousand coroutines, not a thousand threads): it yields what the session's
queue holds (Registered, Assignments, telemetry acks) while a reader task
consumes what the agent sends. SQLite work runs on a small thread pool so the
loop never waits on a disk; telemetry goes to the group-commit writer.
``assign()`` (called from any thread) persists the desired program first and
then pushes it to the agent if it is connected; agents that are away get it
when they register again. :meth:`FleetService.drain` ends every stream with
UNAVAILABLE when the server stops, so agents redial instead of holding the
drain open.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import grpc
import structlog

from spikefleet.errors import ProgramNotFoundError
from spikefleet.v1 import fleet_pb2, fleet_pb2_grpc
from spikefleet_server.auth import current_principal
from spikefleet_server.fleet import limits as checks
from spikefleet_server.fleet.ingest import PRUNE_INTERVAL_S, TelemetryWriter
from spikefleet_server.fleet.limits import TelemetryLimits
from spikefleet_server.fleet.metrics import FleetMetrics
from spikefleet_server.fleet.store import (
    AgentRecord,
    AssignmentRecord,
    FleetStore,
    IngestResult,
    InstallRecord,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

CHUNK = 256 * 1024
LAST_SEEN_WRITE_S = 30.0
DB_THREADS = 4
WRITE_STRIPES = 64  # per-agent write locks: an agent's register and disconnect stay ordered


class AgentConnectedError(Exception):
    """An agent to delete holds its control stream (pass force to end it first)."""


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("grpc's abort raises")


@dataclass
class FleetEvent:
    """What subscribers hear: kind is connected, disconnected, install or telemetry."""

    kind: str
    agent_id: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _End:
    """Ends a session's stream: OK when ``code`` is None, else that status."""

    code: grpc.StatusCode | None = None
    details: str = ""


class _Mailbox:
    """Messages for sessions, handed to the event loop in one wakeup per burst (the
    telemetry writer acks a whole group at once) and in the order they were posted."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: deque[tuple[asyncio.Queue[Any], Any]] = deque()
        self._scheduled = False

    def post(self, outbox: asyncio.Queue[Any], item: object) -> None:
        with self._lock:
            self._items.append((outbox, item))
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            items, self._items = self._items, deque()
            self._scheduled = False
        for outbox, item in items:
            outbox.put_nowait(item)


class _Bucket:
    """A token bucket of telemetry bytes: how long to wait before taking ``cost``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.level = rate, burst, burst
        self.at = time.monotonic()

    def delay(self, cost: float) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.at) * self.rate) - cost
        self.at = now
        return 0.0 if self.level >= 0 else -self.level / self.rate


class _Session:
    def __init__(self, agent_id: str, mailbox: _Mailbox, bucket: _Bucket) -> None:
        self.agent_id = agent_id
        self.bucket = bucket
        self.registered = False  # set once its Register is in the store
        self.last_beat: tuple[str, str, str] | None = None
        self.last_beat_written = 0.0
        self._mailbox = mailbox
        self.outbox: asyncio.Queue[fleet_pb2.ServerMessage | _End] = asyncio.Queue()

    def send(self, message: fleet_pb2.ServerMessage | _End) -> None:
        """Queue a message for the agent (from any thread)."""
        self._mailbox.post(self.outbox, message)

    def end(self, code: grpc.StatusCode | None = None, details: str = "") -> None:
        self.send(_End(code, details))


class FleetService(fleet_pb2_grpc.FleetServicer):
    """``programs(sha256) -> signed bytes`` is the registry's ``get_bytes``; ``metrics``
    are the server's (see :meth:`FleetMetrics.create`)."""

    def __init__(
        self,
        store: FleetStore,
        programs: Callable[[str], bytes],
        *,
        heartbeat_interval_ms: int = 5000,
        metrics: FleetMetrics | None = None,
        limits: TelemetryLimits | None = None,
        prune_interval_s: float = PRUNE_INTERVAL_S,
    ) -> None:
        self.store = store
        self.limits = limits or TelemetryLimits()
        self._write_locks = [threading.Lock() for _ in range(WRITE_STRIPES)]
        self._programs = programs
        self._heartbeat_ms = heartbeat_interval_ms
        self.metrics = metrics or FleetMetrics.create()
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[FleetEvent], None]] = []
        self._handlers = 0
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self._mailboxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}
        self._db_pool = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="fleet-db")
        self._writer = TelemetryWriter(store, limits=self.limits, prune_interval_s=prune_interval_s)
        self.metrics.telemetry_queue.set_function(self._writer.pending)
        store.mark_all_disconnected()

    def drain(self) -> None:
        """Refuse new Connects and end every open one with UNAVAILABLE (agents redial
        with backoff), so a stopping server need not wait for agent streams."""
        with self._lock:
            self._closed = True
            sessions = list(self._sessions.values())
        for session in sessions:
            session.end(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; reconnect")
        if sessions:
            log.info("fleet.draining", sessions=len(sessions))

    def close(self, timeout: float = 5.0) -> None:
        """End every session, wait for their handlers, commit queued telemetry (call after
        the gRPC server stopped, before the database closes)."""
        self.drain()
        with self._idle:
            self._idle.wait_for(lambda: self._handlers == 0, timeout)
        self._writer.close(timeout)
        self._db_pool.shutdown(wait=True)

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

    def delete_agent(self, agent_id: str, *, force: bool = False) -> tuple[bool, int, int] | None:
        """Forget ``agent_id``; (was connected, telemetry rows, install rows), or None if
        unknown. A connected agent raises AgentConnectedError unless ``force``, which
        ends its stream first (it re-appears if it registers again: revoke its token)."""
        with self._lock:
            session = self._sessions.get(agent_id)
            if session is not None:
                if not force:
                    raise AgentConnectedError(agent_id)
                del self._sessions[agent_id]
                self.metrics.connected.set(len(self._sessions))
        if session is not None:
            session.end(grpc.StatusCode.UNAVAILABLE, "this agent was deleted at the server")
        with self._write_lock(agent_id):
            deleted = self.store.delete_agent(agent_id)
        log.info("fleet.agent_deleted", agent_id=agent_id, found=deleted is not None)
        if deleted is None:
            return None
        return session is not None, deleted[0], deleted[1]

    def _write_lock(self, agent_id: str) -> threading.Lock:
        return self._write_locks[hash(agent_id) % WRITE_STRIPES]

    def _register(self, session: _Session, register: fleet_pb2.Register) -> None:
        with self._write_lock(session.agent_id):
            with self._lock:
                if self._sessions.get(session.agent_id) is not session:
                    return  # it already went away (or was replaced): don't mark it connected
            self.store.register(register)

    def _disconnected(self, agent_id: str) -> bool:
        """Record the agent as gone, after any of its writes still in flight, unless a
        newer session of it holds the stream by then."""
        with self._write_lock(agent_id):
            with self._lock:
                if agent_id in self._sessions:
                    return False
            self.store.set_connected(agent_id, False)
        return True

    def connected(self) -> list[str]:
        with self._lock:
            return sorted(a for a, session in self._sessions.items() if session.registered)

    def subscribe(self, callback: Callable[[FleetEvent], None]) -> Callable[[], None]:
        """Call ``callback`` for every fleet event (from the server's event loop or the
        telemetry writer: keep it quick and non-blocking)."""
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

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_pool, fn, *args)

    # -- gRPC ------------------------------------------------------------------

    async def Connect(
        self,
        request_iterator: AsyncIterator[fleet_pb2.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[fleet_pb2.ServerMessage]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("kind") != "register":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first message on Connect must be Register (agent_id, labels, inventory, ...)",
            )
        assert first is not None
        register = first.register
        agent_id = register.agent_id
        problem = checks.register_problem(register)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        caller = current_principal()
        if caller is not None and not caller.may_register_as(agent_id):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"token {caller.name!r} may register only as {', '.join(caller.agents)}, "
                f"not {agent_id!r}; give this agent its own token or fix its agent_id",
            )

        loop = asyncio.get_running_loop()
        old: _Session | None = None
        with self._lock:
            mailbox = self._mailboxes.get(loop)
            if mailbox is None:
                mailbox = self._mailboxes[loop] = _Mailbox(loop)
            bucket = _Bucket(self.limits.rate_bytes_per_s, self.limits.burst_bytes)
            session = _Session(agent_id, mailbox, bucket)
            closed = self._closed
            if not closed:
                self._handlers += 1
                old = self._sessions.get(agent_id)
                self._sessions[agent_id] = session
        if closed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        reader: asyncio.Task[None] | None = None
        try:
            if old is not None:
                old.end()  # the same agent reconnected: its old stream ends
            await self._db(self._register, session, register)
            health = "ok" if register.program_sha256 else "no-program"  # what register stored
            session.last_beat = (register.program_sha256, health, "")
            session.last_beat_written = time.monotonic()
            last_seq = await self._db(self.store.last_telemetry_seq, agent_id)
            registered = fleet_pb2.Registered(
                agent_id=agent_id,
                last_telemetry_seq=last_seq,
                heartbeat_interval_ms=self._heartbeat_ms,
            )
            with self._lock:  # Registered goes out before any pushed Assignment
                session.send(fleet_pb2.ServerMessage(registered=registered))
                session.registered = True
                self.metrics.connected.set(len(self._sessions))
            desired = await self._db(self.store.assignment, agent_id)
            if desired is not None:
                session.send(fleet_pb2.ServerMessage(assignment=desired.to_proto()))
            log.info("fleet.connected", agent_id=agent_id, program=register.program_sha256[:12])
            self._emit(
                FleetEvent("connected", agent_id, {"program_sha256": register.program_sha256})
            )
            reader = asyncio.create_task(self._read(session, requests), name=f"fleet-{agent_id}")
            while True:
                message = await session.outbox.get()
                if isinstance(message, _End):
                    if message.code is not None:
                        await context.abort(message.code, message.details)
                    break
                yield message
        finally:
            if reader is not None:
                reader.cancel()
            await self._forget(session)

    async def _forget(self, session: _Session) -> None:
        agent_id = session.agent_id
        with self._lock:
            current = self._sessions.get(agent_id) is session
            if current:
                del self._sessions[agent_id]
            self.metrics.connected.set(len(self._sessions))
            closed = self._closed
        try:
            if current and not closed:
                # in the pool even if this call is cancelled (the stream dropped mid-Register):
                # it runs after the Register write, so the agent never stays "connected"
                done = asyncio.wrap_future(self._db_pool.submit(self._disconnected, agent_id))
                try:
                    recorded = await asyncio.shield(done)
                except asyncio.CancelledError:
                    recorded = True
                if recorded:
                    log.info("fleet.disconnected", agent_id=agent_id)
                    self._emit(FleetEvent("disconnected", agent_id))
        except Exception:
            log.exception("fleet.disconnect_not_recorded", agent_id=agent_id)
        finally:
            with self._idle:
                self._handlers -= 1
                self._idle.notify_all()

    async def _read(
        self, session: _Session, requests: AsyncIterator[fleet_pb2.AgentMessage]
    ) -> None:
        agent_id = session.agent_id
        try:
            async for message in requests:
                if self._closed:
                    break
                try:
                    await self._handle(session, message)
                except Exception:
                    log.exception("fleet.message_failed", agent_id=agent_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream ended under us; Connect cleans up
            log.debug("fleet.stream_ended", agent_id=agent_id, error=type(exc).__name__)
        finally:
            session.end()

    async def _handle(self, session: _Session, message: fleet_pb2.AgentMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "heartbeat":
            problem = checks.heartbeat_problem(message.heartbeat)
            if problem:
                session.end(grpc.StatusCode.INVALID_ARGUMENT, problem)
                return
            await self._heartbeat(session, message.heartbeat)
        elif kind == "telemetry":
            batch = message.telemetry
            wait = session.bucket.delay(batch.ByteSize())
            if wait > 0:  # over the agent's rate: read its stream slower (flow control)
                await asyncio.sleep(wait)
            self._telemetry(session, batch, checks.telemetry_problem(batch, self.limits))
        elif kind == "install":
            problem = checks.install_problem(message.install)
            if problem:
                session.end(grpc.StatusCode.INVALID_ARGUMENT, problem)
                return
            record = await self._db(self._install, session.agent_id, message.install)
            self._emit(FleetEvent("install", session.agent_id, {"record": record}))
        elif kind == "register":
            session.end(
                grpc.StatusCode.INVALID_ARGUMENT, "Register is only the first message of Connect"
            )

    async def _heartbeat(self, session: _Session, beat: fleet_pb2.Heartbeat) -> None:
        """Write when the agent's state changed (in order with its install reports), else
        refresh last_seen at most every LAST_SEEN_WRITE_S, with the telemetry group
        commit: a fleet heartbeats constantly, and each transaction is an fsync."""
        state = (beat.program_sha256, beat.health, beat.shadow_sha256)
        now = time.monotonic()
        if state != session.last_beat:
            session.last_beat, session.last_beat_written = state, now
            await self._db(self.store.heartbeat, session.agent_id, beat)
        elif now - session.last_beat_written >= LAST_SEEN_WRITE_S:
            session.last_beat_written = now
            self._writer.seen(session.agent_id)

    def _telemetry(
        self, session: _Session, batch: fleet_pb2.TelemetryBatch, problem: str | None
    ) -> None:
        def stored(result: IngestResult) -> None:
            if result.new:
                self.metrics.telemetry.inc()
                self._emit(FleetEvent("telemetry", session.agent_id, {"batch": batch}))
            elif result.refused:
                log.warning(
                    "fleet.telemetry_refused",
                    agent_id=session.agent_id,
                    seq=batch.seq,
                    reason=result.refused,
                )
            ack = fleet_pb2.TelemetryAck(seq=min(batch.seq, checks.INT64_MAX))
            ack.refused = result.refused
            session.send(fleet_pb2.ServerMessage(telemetry_ack=ack))

        self._writer.submit(session.agent_id, batch, stored, problem or "")

    def _install(self, agent_id: str, report: fleet_pb2.InstallReport) -> InstallRecord:
        record = self.store.record_install(agent_id, report)  # and its effect
        self.metrics.installs.labels(status=record.status).inc()
        log.info(
            "fleet.install_report",
            agent_id=agent_id,
            sha256=report.sha256[:12],
            status=record.status,
            reason=report.reason,
        )
        return record

    async def FetchProgram(
        self, request: fleet_pb2.FetchProgramRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[fleet_pb2.ProgramChunk]:
        try:
            data = await self._db(self._programs, request.sha256)
        except (KeyError, ProgramNotFoundError):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no program with sha256 {request.sha256!r} in the registry",
            )
        for offset in range(0, max(len(data), 1), CHUNK):
            chunk = fleet_pb2.ProgramChunk(data=data[offset : offset + CHUNK])
            if offset == 0:
                chunk.total_size = len(data)
            yield chunk


class FleetAdminService(fleet_pb2_grpc.FleetAdminServicer):
    """Operator assignments (admin role), through ``fleet.assign`` (which checks that
    the program exists, in the assignment's own transaction)."""

    def __init__(self, fleet: FleetService) -> None:
        self._fleet = fleet

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
        try:
            record = self._fleet.assign(
                request.agent_id,
                request.sha256,
                shadow_sha256=request.shadow_sha256,
                rollback=request.rollback,
            )
        except ProgramNotFoundError as missing:
            _abort(
                context, grpc.StatusCode.NOT_FOUND, f"{missing} (see 'spikefleet programs list')"
            )
        return fleet_pb2.AssignResponse(
            generation=record.generation,
            connected=request.agent_id in self._fleet.connected(),
        )

    def DeleteAgent(
        self, request: fleet_pb2.DeleteAgentRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.DeleteAgentResponse:
        if not request.agent_id:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "agent_id is empty")
        try:
            deleted = self._fleet.delete_agent(request.agent_id, force=request.force)
        except AgentConnectedError:
            _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"agent {request.agent_id!r} is connected: stop it (or revoke its token) "
                "first, or pass --force to end its stream and delete it anyway",
            )
        if deleted is None:
            _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no agent {request.agent_id!r} (see 'spikefleet agents')",
            )
        was_connected, telemetry, installs = deleted
        return fleet_pb2.DeleteAgentResponse(
            was_connected=was_connected, telemetry_batches=telemetry, installs=installs
        )
