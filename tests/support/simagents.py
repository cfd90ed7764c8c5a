"""Lightweight agents that speak the real control protocol, for scale tests and benchmarks.

A :class:`SimAgent` dials the server's Fleet service like ``spikefleet-agent``
does (Register, heartbeats, telemetry batches, install reports; Assignments
down), but runs no model: installing means fetching the program and switching
a pointer, and telemetry is synthesized from a :class:`Behaviour`. Hundreds fit
in one process, which is what rollout and ingest capacity need to be measured.
Like the real agent, it skips a periodic heartbeat that says what the last one on
its stream said when the server counts telemetry as a heartbeat and a batch went
up since the last one was due.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import structlog

from spikefleet.v1 import fleet_pb2, fleet_pb2_grpc

log = structlog.get_logger(__name__)

Status = fleet_pb2.InstallReport.Status


@dataclass
class Behaviour:
    """How a simulated agent's programs behave, by program sha256."""

    frames_per_batch: int = 100
    p99_ms: float = 1.0
    # Top-1 agreement of a candidate (in shadow) with the active program; default 1.0.
    agreement: dict[str, float] = field(default_factory=dict)
    # Fraction of requests that fail while this program is active; default 0.
    error_rate: dict[str, float] = field(default_factory=dict)
    # Programs whose install fails on this agent (reported FAILED, reason "load").
    fail_installs: set[str] = field(default_factory=set)
    fetch: bool = True  # download assigned programs through FetchProgram


class SimAgent:
    def __init__(
        self,
        channel: grpc.Channel,
        agent_id: str,
        *,
        labels: dict[str, str] | None = None,
        program_sha256: str = "",
        behaviour: Behaviour | None = None,
        heartbeat_s: float = 1.0,
        telemetry_s: float = 1.0,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.agent_id = agent_id
        self.labels = dict(labels or {})
        self.active = program_sha256
        self.previous = ""
        self.shadow = ""
        self.behaviour = behaviour or Behaviour()
        self.heartbeat_s = heartbeat_s
        self.telemetry_s = telemetry_s
        self.installs: list[fleet_pb2.InstallReport] = []
        self.acked_seq = 0
        self.sent_seq = 0
        self.registered = threading.Event()
        self.heartbeats_sent = 0  # over all sessions
        # this session: the server counts telemetry as a heartbeat (Registered), what the
        # last heartbeat sent said, a batch went up since the last heartbeat was due
        self._telemetry_counts = False
        self._last_beat: tuple[str, str, str] | None = None
        self._batch_this_period = False
        self._stub = fleet_pb2_grpc.FleetStub(channel)
        self._metadata = metadata
        self._outbox: queue.Queue[fleet_pb2.AgentMessage | None] = queue.Queue()
        self._lock = threading.Lock()
        self._call: grpc.Future | None = None
        self._thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stopped = threading.Event()  # the current session ended
        self._closed = threading.Event()  # stop() was called
        self.reconnect_s = 0.2

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SimAgent:
        self._closed.clear()
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.agent_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Drop the connection for good (the agent 'disconnects'); ``start()`` dials again."""
        self._closed.set()
        self._end_session()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _end_session(self) -> None:
        self._stopped.set()
        self._outbox.put(None)
        call = self._call
        if call is not None:
            call.cancel()

    # -- the protocol ----------------------------------------------------------------------

    def _requests(self) -> Iterator[fleet_pb2.AgentMessage]:
        yield fleet_pb2.AgentMessage(
            register=fleet_pb2.Register(
                agent_id=self.agent_id,
                labels=self.labels,
                backend="sim",
                program_sha256=self.active,
                previous_sha256=self.previous,
                version="sim",
            )
        )
        while True:
            message = self._outbox.get()
            if message is None:
                return
            yield message

    def _run(self) -> None:
        """Sessions until stop(); like the real agent it redials when the server goes away."""
        while not self._closed.is_set():
            self._session()
            self.registered.clear()
            self._closed.wait(self.reconnect_s)

    def _session(self) -> None:
        self._stopped.clear()
        self._outbox = queue.Queue()
        call = self._stub.Connect(self._requests(), metadata=self._metadata)
        self._call = call
        ticker: threading.Thread | None = None
        try:
            for message in call:
                kind = message.WhichOneof("kind")
                if kind == "registered":
                    with self._lock:
                        self.acked_seq = self.sent_seq = message.registered.last_telemetry_seq
                        self._telemetry_counts = message.registered.telemetry_counts_as_heartbeat
                        self._last_beat, self._batch_this_period = None, False
                    self.registered.set()
                    ticker = threading.Thread(target=self._tick, daemon=True)
                    ticker.start()
                elif kind == "assignment":
                    self._apply(message.assignment)
                elif kind == "telemetry_ack":
                    self.acked_seq = max(self.acked_seq, message.telemetry_ack.seq)
        except grpc.RpcError as exc:
            if not self._closed.is_set():
                log.debug("sim_agent.stream_down", agent_id=self.agent_id, code=str(exc.code()))
        finally:
            self._end_session()
            self._call = None
            if ticker is not None:
                ticker.join(timeout=10)

    def _tick(self) -> None:
        next_beat = next_batch = time.monotonic()
        while not self._stopped.is_set():
            now = time.monotonic()
            if now >= next_beat:
                self._beat(periodic=True)
                next_beat = now + self.heartbeat_s
            if now >= next_batch:
                self._send(fleet_pb2.AgentMessage(telemetry=self._batch(now)))
                with self._lock:
                    self._batch_this_period = True
                next_batch = now + self.telemetry_s
            self._stopped.wait(max(0.0, min(next_beat, next_batch) - time.monotonic()))

    def _send(self, message: fleet_pb2.AgentMessage) -> None:
        if not self._stopped.is_set():
            self._outbox.put(message)

    def _beat(self, *, periodic: bool = False) -> None:
        """Send a heartbeat; a periodic one is skipped as the real agent skips it."""
        beat = self._heartbeat()
        content = (beat.program_sha256, beat.health, beat.shadow_sha256)
        with self._lock:
            if periodic:
                batch, self._batch_this_period = self._batch_this_period, False
                if self._telemetry_counts and batch and content == self._last_beat:
                    return
            self._last_beat = content
            self.heartbeats_sent += 1
        self._send(fleet_pb2.AgentMessage(heartbeat=beat))

    def _heartbeat(self) -> fleet_pb2.Heartbeat:
        with self._lock:
            return fleet_pb2.Heartbeat(
                unix_ms=int(time.time() * 1000),
                program_sha256=self.active,
                health="ok" if self.active else "no-program",
                shadow_sha256=self.shadow,
            )

    def _batch(self, now: float) -> fleet_pb2.TelemetryBatch:
        b = self.behaviour
        with self._lock:
            active, shadow = self.active, self.shadow
            self.sent_seq += 1
            seq = self.sent_seq
        end_ms = int(time.time() * 1000)
        frames = b.frames_per_batch if active else 0
        errors = round(frames * b.error_rate.get(active, 0.0))
        shadow_frames = frames if shadow else 0
        agreements = round(shadow_frames * b.agreement.get(shadow, 1.0))
        return fleet_pb2.TelemetryBatch(
            seq=seq,
            start_unix_ms=end_ms - int(self.telemetry_s * 1000),
            end_unix_ms=end_ms,
            program_sha256=active,
            backend="sim",
            frames=frames,
            predictions=frames,
            errors=errors,
            latency_p50_ms=b.p99_ms / 2,
            latency_p95_ms=b.p99_ms * 0.9,
            latency_p99_ms=b.p99_ms,
            shadow_frames=shadow_frames,
            shadow_agreements=agreements,
            shadow_sha256=shadow,
        )

    def _apply(self, assignment: fleet_pb2.Assignment) -> None:
        if assignment.rollback:
            with self._lock:
                if not self.previous:
                    report = self._report("", Status.FAILED, assignment, "rollback", "no previous")
                else:
                    self.active, self.previous = self.previous, self.active
                    report = self._report(self.active, Status.ROLLED_BACK, assignment)
        elif assignment.sha256 and assignment.sha256 != self.active:
            report = self._install(assignment)
        elif assignment.sha256:
            report = self._report(assignment.sha256, Status.INSTALLED, assignment, "", "active")
        else:
            report = None
        with self._lock:
            self.shadow = assignment.shadow_sha256
        if report is not None:
            self.installs.append(report)
            self._send(fleet_pb2.AgentMessage(install=report))
            self._beat()

    def _install(self, assignment: fleet_pb2.Assignment) -> fleet_pb2.InstallReport:
        sha = assignment.sha256
        if self.behaviour.fetch:
            try:
                size = sum(
                    len(chunk.data)
                    for chunk in self._stub.FetchProgram(
                        fleet_pb2.FetchProgramRequest(sha256=sha),
                        metadata=self._metadata,
                        timeout=30,
                    )
                )
            except grpc.RpcError as exc:
                return self._report(sha, Status.FAILED, assignment, "fetch", str(exc.details()))
            if size == 0:
                return self._report(sha, Status.FAILED, assignment, "fetch", "empty program")
        if sha in self.behaviour.fail_installs:
            return self._report(sha, Status.FAILED, assignment, "load", "simulated load failure")
        with self._lock:
            self.previous, self.active = self.active, sha
        return self._report(sha, Status.INSTALLED, assignment)

    @staticmethod
    def _report(
        sha: str,
        status: fleet_pb2.InstallReport.Status,
        assignment: fleet_pb2.Assignment,
        reason: str = "",
        detail: str = "",
    ) -> fleet_pb2.InstallReport:
        return fleet_pb2.InstallReport(
            sha256=sha,
            status=status,
            reason=reason,
            detail=detail,
            generation=assignment.generation,
        )


def start_agents(
    channel_factory: Callable[[], grpc.Channel],
    count: int,
    *,
    prefix: str = "sim",
    labels: Callable[[int], dict[str, str]] | None = None,
    program_sha256: str = "",
    behaviour: Behaviour | None = None,
    heartbeat_s: float = 1.0,
    telemetry_s: float = 1.0,
    metadata: tuple[tuple[str, str], ...] = (),
    timeout_s: float = 60.0,
) -> list[SimAgent]:
    """Start ``count`` agents and wait until every one is registered."""
    agents = [
        SimAgent(
            channel_factory(),
            f"{prefix}-{i:04d}",
            labels=labels(i) if labels else {},
            program_sha256=program_sha256,
            behaviour=behaviour,
            heartbeat_s=heartbeat_s,
            telemetry_s=telemetry_s,
            metadata=metadata,
        ).start()
        for i in range(count)
    ]
    deadline = time.monotonic() + timeout_s
    for agent in agents:
        if not agent.registered.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"{agent.agent_id} did not register within {timeout_s:g}s")
    return agents
