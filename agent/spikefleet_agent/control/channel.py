"""The one bidirectional stream from the agent to the server.

Up: Register first, then heartbeats, telemetry batches from the spool (in
seq order, a bounded window ahead of the server's acks) and install reports.
Down: Registered (with the last telemetry seq the server stored, so the spool
replays exactly what is missing), Assignments and telemetry acks. When the
stream breaks the agent keeps serving and redials with jittered exponential
backoff.

Heartbeats go every heartbeat period, except that when the server says in
Registered that a telemetry batch counts as a heartbeat, a period's heartbeat
is skipped if it says what the last one sent on this stream said (all but its
time) and a telemetry batch went up during the period: the batch already told
the server the agent is there. A changed state, the first heartbeat on a
stream and those of an agent with no telemetry going up are sent as ever.

Several server addresses (replicas) fail over in turn: an agent starts at a
random one, so a fleet spreads over them, and moves to the next whenever a
stream ends (the server died, drained, or closed the stream at its maximum
connection age). The backoff grows per full round of addresses that all
failed, so a dead replica costs one short step, not a growing wait. A name
that resolves to several addresses fails over within gRPC's own resolver
(pick-first over the shuffled list). Because the server acks only stored
telemetry and says, at registration, the last seq it holds, whatever was in
flight to a replica that died is sent again to the next and stored once.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import structlog

from spikefleet.client.tls import ClientTLS, open_channel
from spikefleet.errors import InstallError, KeyFileError
from spikefleet.program.signing import Endorsement, PublicKey
from spikefleet.v1 import fleet_pb2, fleet_pb2_grpc, registry_pb2, registry_pb2_grpc
from spikefleet_agent.programs.keyring import Announced
from spikefleet_agent.telemetry.spool import Spool

log = structlog.get_logger(__name__)

SEND_WINDOW = 256  # telemetry batches in flight beyond the last ack
# The server refusing this agent's token or its claimed identity: a retry at the
# normal pace can't succeed, so the agent logs why and redials at the capped delay.
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
REFUSED_ATTEMPT = 30
FETCH_TIMEOUT_S = 60.0
# A name that resolves to several addresses: try them in a random order, so agents
# dialing one DNS name spread over its addresses and skip the dead ones.
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": True}}]})


def backoff_delay(attempt: int, low: float, high: float) -> float:
    """Exponential backoff with jitter in [50%, 100%] of the step, capped at ``high``."""
    step = min(high, low * (2 ** min(attempt, 30)))
    return step * random.uniform(0.5, 1.0)


def failover_delay(failures: int, addresses: int, low: float, high: float) -> float:
    """The wait before the next dial after ``failures`` sessions in a row that never
    registered: grows per full round over ``addresses``, so the first try of each
    other server comes after only the shortest (jittered) step."""
    return backoff_delay(failures // max(1, addresses), low, high)


class ControlChannel:
    def __init__(
        self,
        address: str | Sequence[str],
        *,
        register: Callable[[], fleet_pb2.Register],
        heartbeat: Callable[[], fleet_pb2.Heartbeat],
        on_assignment: Callable[[fleet_pb2.Assignment], None],
        spool: Spool,
        token: str = "",
        tls_ca: str = "",
        tls: ClientTLS | bool | None = None,
        heartbeat_interval_s: float = 5.0,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        on_connected: Callable[[bool], None] | None = None,
    ) -> None:
        self.addresses = [address] if isinstance(address, str) else list(address)
        if not self.addresses or not all(self.addresses):
            raise ValueError(f"server address(es) must be non-empty, got {address!r}")
        self._index = random.randrange(len(self.addresses))  # spread a fleet over replicas
        self._register = register
        self._heartbeat = heartbeat
        self._on_assignment = on_assignment
        self._spool = spool
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # TLS unless the address is loopback (tls None); tls_ca alone: that CA
        self._tls: ClientTLS | bool | None = tls
        if tls is None and tls_ca:
            self._tls = ClientTLS(ca=Path(tls_ca))
        self._heartbeat_s = heartbeat_interval_s
        self._min_s, self._max_s = reconnect_min_s, reconnect_max_s
        self._on_connected = on_connected or (lambda up: None)
        self._outbox: deque[fleet_pb2.AgentMessage] = deque()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self.connected = threading.Event()
        self.refusal = ""  # why the server last refused this agent, if it did
        self.retry_delay_s = 0.0
        self._channel: grpc.Channel | None = None
        self._call: grpc.Future | None = None
        self._registered_once = False
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    @property
    def address(self) -> str:
        """The server address this channel dials now (or dialled last)."""
        return self.addresses[self._index]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(timeout=10)

    def send(self, message: fleet_pb2.AgentMessage) -> None:
        """Queue a message (install reports); sent as soon as a stream is up."""
        self._outbox.append(message)
        self._wake.set()

    def wake(self) -> None:
        """New telemetry is in the spool."""
        self._wake.set()

    def fetch(self, sha256: str) -> bytes:
        """The signed program with this sha256 from the server, or InstallError('fetch')."""
        channel = self._channel
        if channel is None or not self.connected.is_set():
            raise InstallError("not connected to the server: cannot fetch the program", "fetch")
        stub = fleet_pb2_grpc.FleetStub(channel)
        parts: list[bytes] = []
        try:
            for chunk in stub.FetchProgram(
                fleet_pb2.FetchProgramRequest(sha256=sha256),
                metadata=self._metadata,
                timeout=FETCH_TIMEOUT_S,
            ):
                parts.append(chunk.data)
        except grpc.RpcError as exc:
            raise InstallError(
                f"fetching program {sha256[:12]} failed: {exc.code().name} {exc.details()}",
                "fetch",
            ) from exc
        return b"".join(parts)

    def trusted_keys(self) -> list[Announced]:
        """The keys the server announces (TrustedKeys), with their endorsements; raises
        InstallError('keys') when not connected or the call fails."""
        channel = self._channel
        if channel is None or not self.connected.is_set():
            raise InstallError("not connected to the server: cannot ask for its keys", "keys")
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        try:
            reply = stub.TrustedKeys(
                registry_pb2.TrustedKeysRequest(), metadata=self._metadata, timeout=30
            )
        except grpc.RpcError as exc:
            raise InstallError(
                f"asking the server for its keys failed: {exc.code().name} {exc.details()}",
                "keys",
            ) from exc
        announced = []
        for info in reply.keys:
            try:
                key = PublicKey.from_pem(info.pem, f"server key {info.key_id}")
            except KeyFileError as exc:
                log.warning("control.bad_server_key", key_id=info.key_id, error=str(exc))
                continue
            endorsement = (
                Endorsement(key, info.endorsed_by, info.endorsement)
                if info.endorsed_by and info.endorsement
                else None
            )
            announced.append(Announced(key, endorsement))
        return announced

    def _dial(self) -> grpc.Channel:
        options = [
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.service_config", SERVICE_CONFIG),
        ]
        channel: grpc.Channel = open_channel(self.address, self._tls, options)
        return channel

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            channel = self._dial()
            self._channel = channel
            self._registered_once = False
            refused = False
            try:
                self._session(channel)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                details = exc.details() if hasattr(exc, "details") else ""
                refused = code in REFUSED
                if self._stopped.is_set():
                    pass
                elif refused:
                    self.refusal = f"{getattr(code, 'name', code)}: {details}"
                    log.error(
                        "control.refused",
                        server=self.address,
                        agent_id=self._register().agent_id,
                        code=getattr(code, "name", str(code)),
                        details=details,
                        hint="the server does not accept this token for this agent id: "
                        "use the agent token issued for this agent_id ([server] token_file) "
                        "or set agent_id to the id the token was issued for",
                    )
                else:
                    log.warning(
                        "control.stream_down",
                        server=self.address,
                        code=getattr(code, "name", str(code)),
                        details=details,
                    )
            except Exception:
                log.exception("control.session_failed", server=self.address)
            finally:
                if self.connected.is_set():
                    self.connected.clear()
                    self._on_connected(False)
                self._channel = None
                channel.close()
            failures = 0 if self._registered_once else failures + 1
            if len(self.addresses) > 1:
                self._index = (self._index + 1) % len(self.addresses)
            if refused:  # retrying soon can't help: wait the longest step
                self.retry_delay_s = backoff_delay(REFUSED_ATTEMPT, self._min_s, self._max_s)
            else:
                self.retry_delay_s = failover_delay(
                    failures, len(self.addresses), self._min_s, self._max_s
                )
            if not self._stopped.is_set():
                self._stopped.wait(self.retry_delay_s)

    def _session(self, channel: grpc.Channel) -> None:
        stub = fleet_pb2_grpc.FleetStub(channel)
        # telemetry_counts: the server takes a telemetry batch as proof of life
        state = {"sent": 0, "acked": 0, "registered": False, "telemetry_counts": False}
        done = threading.Event()

        def requests() -> Iterator[fleet_pb2.AgentMessage]:
            yield fleet_pb2.AgentMessage(register=self._register())
            next_beat = 0.0
            last_beat: fleet_pb2.Heartbeat | None = None  # sent on this stream, no time
            batch_this_period = False  # a telemetry batch went up since the last beat due
            while not done.is_set() and not self._stopped.is_set():
                self._wake.clear()
                if not state["registered"]:
                    self._wake.wait(0.05)
                    continue
                now = time.monotonic()
                if now >= next_beat:
                    beat = self._heartbeat()
                    content = fleet_pb2.Heartbeat()
                    content.CopyFrom(beat)
                    content.ClearField("unix_ms")
                    skip = state["telemetry_counts"] and batch_this_period and content == last_beat
                    if not skip:
                        yield fleet_pb2.AgentMessage(heartbeat=beat)
                        last_beat = content
                    batch_this_period = False
                    next_beat = now + self._heartbeat_s
                while self._outbox:
                    yield self._outbox.popleft()
                room = SEND_WINDOW - (state["sent"] - state["acked"])
                batches = self._spool.pending(state["sent"], min(64, room)) if room > 0 else []
                for batch in batches:
                    yield fleet_pb2.AgentMessage(telemetry=batch)
                    state["sent"] = batch.seq
                    batch_this_period = True
                if not batches or room <= 0:
                    self._wake.wait(max(0.01, min(1.0, next_beat - time.monotonic())))

        call = stub.Connect(requests(), metadata=self._metadata)
        self._call = call
        try:
            for message in call:
                kind = message.WhichOneof("kind")
                if kind == "registered":
                    last = message.registered.last_telemetry_seq
                    if self._spool.rebase(last):
                        self._spool.ack(last)
                    else:  # a forged seq near 2**63: keep our numbering, resend what waits
                        log.error(
                            "control.telemetry_seq_unfollowable",
                            server=self.address,
                            server_seq=last,
                            hint="the server holds a telemetry seq for this agent id that "
                            "this agent never sent (an impersonator with an unbound agent "
                            "token?); bind agent tokens to ids, and delete the agent's "
                            "records at the server: spikefleet agents delete AGENT_ID",
                        )
                        last = 0
                    state["sent"] = state["acked"] = last
                    state["telemetry_counts"] = message.registered.telemetry_counts_as_heartbeat
                    state["registered"] = True
                    self.refusal = ""
                    self._registered_once = True
                    if message.registered.heartbeat_interval_ms:
                        self._heartbeat_s = message.registered.heartbeat_interval_ms / 1000.0
                    self.connected.set()
                    self._on_connected(True)
                    self._wake.set()
                    log.info("control.registered", server=self.address, last_telemetry_seq=last)
                elif kind == "assignment":
                    self._on_assignment(message.assignment)
                elif kind == "telemetry_ack":
                    if message.telemetry_ack.refused:
                        log.warning(
                            "control.telemetry_refused",
                            server=self.address,
                            seq=message.telemetry_ack.seq,
                            reason=message.telemetry_ack.refused,
                        )
                    self._spool.ack(message.telemetry_ack.seq)
                    state["acked"] = max(state["acked"], message.telemetry_ack.seq)
                    self._wake.set()
        finally:
            done.set()
            self._wake.set()
            self._call = None
