"""The Fleet servicer: one Connect stream per agent, program downloads by sha256.

Everything here runs on the server's event loop: a thousand agents are a
thousand coroutines, not a thousand threads. Connect yields what the session's
queue holds (Registered, Assignments, telemetry acks) while a reader task
consumes what the agent sends; the stores do their transactions on the storage
threads, and telemetry goes to the group-commit writer. ``assign()`` persists
the desired program first and then pushes it to the agent if it is connected;
agents that are away get it when they register again. :meth:`FleetService.drain`
ends every stream with UNAVAILABLE when the server stops, so agents redial
instead of holding the drain open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog

from spikefleet.errors import ProgramNotFoundError
from spikefleet.v1 import fleet_pb2, fleet_pb2_grpc
from spikefleet.wire.fleet import Assignment, DeletedAgent
from spikefleet_server.auth import current_principal
from spikefleet_server.fleet import limits as checks
from spikefleet_server.fleet.ingest import PRUNE_INTERVAL_S, TelemetryWriter
from spikefleet_server.fleet.limits import TelemetryLimits
from spikefleet_server.fleet.metrics import FleetMetrics
from spikefleet_server.fleet.store import AgentRecord, AssignmentRecord, Registration
from spikefleet_server.fleet.storm import DEFAULT_POLICY, RegistrationsFirst, StormPolicy
from spikefleet_server.storage.areas import FleetStorage, TelemetryStorage
from spikefleet_server.telemetry import IngestResult

log = structlog.get_logger(__name__)

CHUNK = 256 * 1024
LAST_SEEN_WRITE_S = 30.0


class AgentConnectedError(Exception):
    """An agent to delete holds its control stream (pass force to end it first)."""


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
    def __init__(self, agent_id: str, bucket: _Bucket) -> None:
        self.agent_id = agent_id
        self.bucket = bucket
        self.registered = False  # set once its Register is in the store
        # an assignment was made while it registered (before pushes reach it)
        self.assigned_meanwhile = False
        self.last_beat: tuple[str, str, str] | None = None
        self.last_beat_written = 0.0
        self.generation = 0  # of the newest assignment sent on this stream
        self.outbox: asyncio.Queue[fleet_pb2.ServerMessage | _End] = asyncio.Queue()

    def send(self, message: fleet_pb2.ServerMessage | _End) -> None:
        self.outbox.put_nowait(message)

    def push(self, record: AssignmentRecord) -> None:
        """Send an assignment unless this stream already carried it (or a newer one): a
        replica hears its own NOTIFYs too, and a rollback delivered twice would roll the
        agent back twice."""
        if record.generation > self.generation:
            self.generation = record.generation
            self.send(fleet_pb2.ServerMessage(assignment=record.to_proto()))

    def end(self, code: grpc.StatusCode | None = None, details: str = "") -> None:
        self.send(_End(code, details))


class FleetService(fleet_pb2_grpc.FleetServicer):
    """``programs(sha256) -> signed bytes`` is the registry's ``get_bytes``; ``metrics``
    are the server's (see :meth:`FleetMetrics.create`). Call :meth:`start` on the loop
    before serving and :meth:`close` after the gRPC server stopped."""

    def __init__(
        self,
        store: FleetStorage,
        telemetry: TelemetryStorage,
        programs: Callable[[str], Awaitable[bytes]],
        *,
        heartbeat_interval_ms: int = 5000,
        metrics: FleetMetrics | None = None,
        limits: TelemetryLimits | None = None,
        prune_interval_s: float = PRUNE_INTERVAL_S,
        replicated: bool = False,
        storm: StormPolicy | None = DEFAULT_POLICY,
        telemetry_counts_as_heartbeat: bool = True,
    ) -> None:
        """``replicated``: other replicas share the database and hold other agents'
        streams, so what it says about their connections is theirs to change.
        ``storm``: when Registers come so fast that the open streams' reads wait
        (see :mod:`spikefleet_server.fleet.storm`); None: never.
        ``telemetry_counts_as_heartbeat``: say so in Registered (agents then skip their
        unchanged heartbeats while telemetry flows); False answers as servers before it
        did (tests of agents against an older server). Either way a telemetry batch
        refreshes last_seen."""
        self._replicated = replicated
        self._telemetry_counts_as_heartbeat = telemetry_counts_as_heartbeat
        self.store = store
        self.telemetry = telemetry
        self.limits = limits or TelemetryLimits()
        # per agent: its register and its disconnect (and a delete) stay in order
        self._write_locks: dict[str, asyncio.Lock] = {}
        self._programs = programs
        self._heartbeat_ms = heartbeat_interval_ms
        self.metrics = metrics or FleetMetrics.create()
        self._sessions: dict[str, _Session] = {}
        self._subscribers: list[Callable[[FleetEvent], None]] = []
        self._handlers = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._writer = TelemetryWriter(
            telemetry, limits=self.limits, prune_interval_s=prune_interval_s
        )
        self.metrics.telemetry_queue.set_function(self._writer.pending)
        self.registrations_first = (
            RegistrationsFirst(storm, on_held=self.metrics.reads_held.inc)
            if storm is not None
            else None
        )

    async def start(self) -> None:
        """Nobody is connected yet, whatever the database says; start the writer."""
        self._closed = False
        if not self._replicated:
            await self.store.mark_all_disconnected()
        self._writer.start()

    def drain(self) -> None:
        """Refuse new Connects and end every open one with UNAVAILABLE (agents redial
        with backoff), so a stopping server need not wait for agent streams."""
        self._closed = True
        if self.registrations_first is not None:
            self.registrations_first.close()
        sessions = list(self._sessions.values())
        for session in sessions:
            session.end(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; reconnect")
        if sessions:
            log.info("fleet.draining", sessions=len(sessions))

    async def close(self, timeout: float = 5.0) -> None:
        """End every session, wait for their handlers, commit queued telemetry (after the
        gRPC server stopped, before the database closes)."""
        self.drain()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("fleet.handlers_still_running", handlers=self._handlers)
        await self._writer.close(timeout)

    # -- the API the rest of the server uses -----------------------------------

    async def assign(
        self, agent_id: str, sha256: str, *, shadow_sha256: str = "", rollback: bool = False
    ) -> AssignmentRecord:
        """Make ``sha256`` the desired program of ``agent_id`` (pushed now if connected)."""
        record = await self.store.assign(agent_id, sha256, shadow_sha256, rollback)
        self._push(record)
        log.info("fleet.assigned", agent_id=agent_id, sha256=sha256, generation=record.generation)
        return record

    async def assigned_elsewhere(self, agent_id: str, generation: int = 0) -> None:
        """Some replica stored assignment ``generation`` of ``agent_id`` (its NOTIFY; ""
        = anyone's, after notifications may have been missed): push it if the stream is
        here and has not carried it yet (this replica's own are pushed already)."""
        if agent_id:
            candidates = [self._sessions[agent_id]] if agent_id in self._sessions else []
        else:
            candidates = list(self._sessions.values())
        sessions = []
        for session in candidates:
            if not session.registered:  # still registering: it reads its assignment again
                session.assigned_meanwhile = True
            elif not generation or session.generation < generation:  # not carried yet
                sessions.append(session)
        for session in sessions:
            desired = await self.store.assignment(session.agent_id)
            if desired is not None and self._sessions.get(session.agent_id) is session:
                session.push(desired)

    async def assign_many(
        self, assignments: Sequence[tuple[str, str, str, bool]]
    ) -> list[AssignmentRecord]:
        """:meth:`assign` for several (agent_id, sha256, shadow_sha256, rollback) in one
        transaction (one fsync for a whole rollout wave)."""
        records = await self.store.assign_many(assignments)
        for record in records:
            self._push(record)
        log.info("fleet.assigned_many", agents=len(records))
        return records

    def _push(self, record: AssignmentRecord) -> None:
        """Send a committed assignment down the agent's stream, if it is here; a session
        still registering reads its assignment again once registered instead."""
        session = self._sessions.get(record.agent_id)
        if session is None:
            return
        if session.registered:
            session.push(record)
        else:
            session.assigned_meanwhile = True

    async def agents(self) -> list[AgentRecord]:
        return await self.store.agents()

    async def delete_agent(
        self, agent_id: str, *, force: bool = False
    ) -> tuple[bool, int, int] | None:
        """Forget ``agent_id``; (was connected, telemetry rows, install rows), or None if
        unknown. A connected agent raises AgentConnectedError unless ``force``, which
        ends its stream first (it re-appears if it registers again: revoke its token)."""
        session = self._sessions.get(agent_id)
        if session is not None:
            if not force:
                raise AgentConnectedError(agent_id)
            del self._sessions[agent_id]
            self.metrics.connected.set(len(self._sessions))
            session.end(grpc.StatusCode.UNAVAILABLE, "this agent was deleted at the server")
        async with self._write_lock(agent_id):
            deleted = await self.store.delete_agent(agent_id)
        log.info("fleet.agent_deleted", agent_id=agent_id, found=deleted is not None)
        if deleted is None:
            return None
        return session is not None, deleted[0], deleted[1]

    def _write_lock(self, agent_id: str) -> asyncio.Lock:
        lock = self._write_locks.get(agent_id)
        if lock is None:
            lock = self._write_locks[agent_id] = asyncio.Lock()
        return lock

    async def _register(
        self, session: _Session, register: fleet_pb2.Register
    ) -> Registration | None:
        """Store the Register and read what the session starts from; None when the session
        was replaced (or ended) before its write, which then is not made."""

        async def write() -> Registration | None:
            async with self._write_lock(session.agent_id):
                if self._sessions.get(session.agent_id) is not session:
                    return None  # it already went away (or was replaced): not "connected"
                return await self.store.register(register)

        # a task of its own that keeps the agent's lock until the write is done, even when
        # the stream drops meanwhile: its "disconnected" write then comes after it
        return await asyncio.shield(asyncio.ensure_future(write()))

    async def _disconnected(self, agent_id: str) -> bool:
        """Record the agent as gone, after any of its writes still in flight, unless a
        newer session of it holds the stream by then."""
        lock = self._write_lock(agent_id)
        async with lock:
            if agent_id in self._sessions:
                return False
            # not if it is recorded at another replica by now (it moved there first)
            changed = await self.store.disconnected(agent_id)
        if not lock.locked() and agent_id not in self._sessions:
            self._write_locks.pop(agent_id, None)
        return changed

    async def reclaim(self, old_id: int, new_id: int) -> None:
        """This replica's liveness lapsed (another may have recorded its agents as gone):
        record the streams it holds as connected here again."""
        count = await self.store.reclaim(self.connected(), old_id, new_id)
        log.info("fleet.reclaimed", agents=count, replica_id=new_id)

    def connected(self) -> list[str]:
        return sorted(a for a, session in self._sessions.items() if session.registered)

    def subscribe(self, callback: Callable[[FleetEvent], None]) -> Callable[[], None]:
        """Call ``callback`` (on the server's loop: keep it quick) for every fleet event."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, event: FleetEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("fleet.subscriber_failed", kind=event.kind)

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
        if self._closed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

        session = _Session(agent_id, _Bucket(self.limits.rate_bytes_per_s, self.limits.burst_bytes))
        old = self._sessions.get(agent_id)
        self._sessions[agent_id] = session
        self._handlers += 1
        self._idle.clear()
        reader: asyncio.Task[None] | None = None
        try:
            if old is not None:
                old.end()  # the same agent reconnected: its old stream ends
            gate = self.registrations_first
            if gate is not None:
                gate.registering()
            try:
                start = await self._register(session, register)
                if start is None:
                    session.end()  # replaced meanwhile: the newer stream is the agent's
                else:
                    await self._open(session, register, start)
            finally:
                if gate is not None:
                    gate.registered()
            if start is not None:
                reader = asyncio.create_task(
                    self._read(session, requests), name=f"fleet-{agent_id}"
                )
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

    async def _open(
        self, session: _Session, register: fleet_pb2.Register, start: Registration
    ) -> None:
        """Registered (with the last stored seq), then the desired state; from here on
        assignments are pushed. One committed after the Register's transaction read and
        before this point was not pushed (the session was not registered yet): it is
        read again, until none came meanwhile."""
        agent_id = session.agent_id
        desired = start.assignment
        while session.assigned_meanwhile:
            session.assigned_meanwhile = False
            desired = await self.store.assignment(agent_id)
        health = "ok" if register.program_sha256 else "no-program"  # what register stored
        session.last_beat = (register.program_sha256, health, "")
        session.last_beat_written = time.monotonic()
        registered = fleet_pb2.Registered(
            agent_id=agent_id,
            last_telemetry_seq=start.last_telemetry_seq,
            heartbeat_interval_ms=self._heartbeat_ms,
            telemetry_counts_as_heartbeat=self._telemetry_counts_as_heartbeat,
        )
        session.send(fleet_pb2.ServerMessage(registered=registered))  # before Assignments
        if desired is not None:
            session.push(desired)
        session.registered = True  # no await since the last read: later ones are pushed
        self.metrics.connected.set(len(self._sessions))
        log.info("fleet.connected", agent_id=agent_id, program=register.program_sha256[:12])
        self._emit(FleetEvent("connected", agent_id, {"program_sha256": register.program_sha256}))

    async def _forget(self, session: _Session) -> None:
        agent_id = session.agent_id
        current = self._sessions.get(agent_id) is session
        if current:
            del self._sessions[agent_id]
        self.metrics.connected.set(len(self._sessions))
        try:
            if current and not self._closed:
                # a task of its own, finished even if this call is cancelled (the stream
                # dropped mid-Register): after the Register write, so the agent never
                # stays "connected"
                done = asyncio.ensure_future(self._disconnected(agent_id))
                done.add_done_callback(lambda f: self._announce_disconnect(agent_id, f))
                # cancelled meanwhile: the write still lands, and the call ends CANCELLED
                await asyncio.shield(done)
        except Exception:
            log.exception("fleet.disconnect_not_recorded", agent_id=agent_id)
        finally:
            self._handlers -= 1
            if self._handlers == 0:
                self._idle.set()

    def _announce_disconnect(self, agent_id: str, done: asyncio.Future[bool]) -> None:
        if done.cancelled() or done.exception() is not None or not done.result():
            return
        log.info("fleet.disconnected", agent_id=agent_id)
        self._emit(FleetEvent("disconnected", agent_id))

    async def _read(
        self, session: _Session, requests: AsyncIterator[fleet_pb2.AgentMessage]
    ) -> None:
        agent_id = session.agent_id
        gate = self.registrations_first
        try:
            while True:
                if gate is not None:
                    await gate.ready()  # agents are registering: their turn first
                message = await anext(requests, None)
                if message is None or self._closed:
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
            self.metrics.heartbeats.inc()
            beat = message.heartbeat
            state = (beat.program_sha256, beat.health, beat.shadow_sha256)
            if state == session.last_beat:  # checked when it was new; nothing to write
                self._still_here(session)
                return
            problem = checks.heartbeat_problem(beat)
            if problem:
                session.end(grpc.StatusCode.INVALID_ARGUMENT, problem)
                return
            session.last_beat, session.last_beat_written = state, time.monotonic()
            await self.store.heartbeat(session.agent_id, beat)
        elif kind == "telemetry":
            batch = message.telemetry
            size = batch.ByteSize()
            wait = session.bucket.delay(size)
            if wait > 0:  # over the agent's rate: read its stream slower (flow control)
                await asyncio.sleep(wait)
            self._still_here(session)  # proof of life, as an unchanged heartbeat is
            self._telemetry(session, batch, checks.telemetry_problem(batch, self.limits, size))
        elif kind == "register":
            session.end(
                grpc.StatusCode.INVALID_ARGUMENT, "Register is only the first message of Connect"
            )
        elif kind == "install":
            report = message.install
            problem = checks.install_problem(report)
            if problem:
                session.end(grpc.StatusCode.INVALID_ARGUMENT, problem)
                return
            if len(report.detail) > checks.MAX_DETAIL:
                report.detail = report.detail[: checks.MAX_DETAIL - 1] + "…"
            record = await self.store.record_install(session.agent_id, report)
            self.metrics.installs.labels(status=record.status).inc()
            log.info(
                "fleet.install_report",
                agent_id=session.agent_id,
                sha256=report.sha256[:12],
                status=record.status,
                reason=report.reason,
            )
            self._emit(FleetEvent("install", session.agent_id, {"record": record}))

    def _still_here(self, session: _Session) -> None:
        """A heartbeat that changed nothing, or a telemetry batch (agents told so in
        Registered skip their unchanged heartbeats while they send telemetry). A changed
        heartbeat is written at once (in order with the agent's install reports); these
        only refresh last_seen, at most every LAST_SEEN_WRITE_S and with the telemetry
        group commit: a fleet is heard from constantly, and each transaction is an
        fsync."""
        now = time.monotonic()
        if now - session.last_beat_written >= LAST_SEEN_WRITE_S:
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

    async def FetchProgram(
        self, request: fleet_pb2.FetchProgramRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[fleet_pb2.ProgramChunk]:
        try:
            data = await self._programs(request.sha256)
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

    async def Assign(
        self, request: fleet_pb2.AssignRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.AssignResponse:
        if not request.agent_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "agent_id is empty")
        if not request.rollback and not request.sha256:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "give the sha256 of a registry program, or rollback=true",
            )
        try:
            record = await self._fleet.assign(
                request.agent_id,
                request.sha256,
                shadow_sha256=request.shadow_sha256,
                rollback=request.rollback,
            )
        except ProgramNotFoundError as missing:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"{missing} (see 'spikefleet programs list')"
            )
        return Assignment(
            request.agent_id,
            request.sha256,
            request.shadow_sha256,
            request.rollback,
            record.generation,
            connected=request.agent_id in self._fleet.connected(),
        ).to_proto()

    async def DeleteAgent(
        self, request: fleet_pb2.DeleteAgentRequest, context: grpc.aio.ServicerContext
    ) -> fleet_pb2.DeleteAgentResponse:
        if not request.agent_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "agent_id is empty")
        try:
            deleted = await self._fleet.delete_agent(request.agent_id, force=request.force)
        except AgentConnectedError:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"agent {request.agent_id!r} is connected: stop it (or revoke its token) "
                "first, or set force=true to end its stream and delete it anyway",
            )
        if deleted is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no agent {request.agent_id!r} (see 'spikefleet agents')",
            )
            raise AssertionError("grpc's abort raises")
        return DeletedAgent(request.agent_id, *deleted).to_proto()
