"""What replicas on one PostgreSQL use to cooperate: notifications and a leader lease.

- :class:`Listener` holds one connection that ``LISTEN``s on channels and calls
  back for each notification, so a change made through one replica (an
  assignment) reaches the replica holding the agent's stream at once, with no
  polling per agent. ``pg_notify`` sent in the writing transaction is delivered
  only if it commits.
- :class:`Lease` is leadership by session advisory lock: one replica at a time
  holds it (rollouts advance only there). The lock lives as long as its
  connection, so a replica that dies (even by SIGKILL) releases it as soon as
  PostgreSQL sees the connection close, and another takes it on its next try.
- :class:`Liveness` is each replica's own advisory lock, under a random id the
  agents' rows carry (``fleet_agents.replica_id``): every replica looks every
  few seconds for ids that hold connected agents but whose lock is free, and
  marks those agents disconnected, so a dead replica's agents do not stay
  "connected" for ever.

A dead process's locks go at once (the kernel closes its socket). For a host
that vanishes, the server notices by TCP keepalive, which these connections set
tight on the server's side (about 8 s), so the bound holds then too.

Both reconnect on their own with backoff, and both talk psycopg directly (one
long-lived connection each, outside the storage layer's pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import psycopg
import sqlalchemy as sa
import structlog
from psycopg import sql

log = structlog.get_logger(__name__)

RETRY_MIN_S = 0.5
RETRY_MAX_S = 5.0


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``) as the libpq URI psycopg takes."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def lease_key(name: str) -> int:
    """A stable 32-bit advisory-lock key for a lease name."""
    return zlib.crc32(f"spikefleet:{name}".encode())


# The server side of the connections holding locks: PostgreSQL notices a vanished replica
# host after about idle + interval * count seconds and frees its locks.
_SERVER_KEEPALIVE = (
    "-c tcp_keepalives_idle=4 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=2"
)


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        libpq_url(url),
        autocommit=True,
        connect_timeout=10,
        # notice a dead peer (a vanished database host) in about half a minute
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        options=_SERVER_KEEPALIVE,
    )


class Listener:
    """Calls ``callback(channel, payload)`` for every notification on ``channels``.

    ``on_reconnect`` runs after every reconnection: notifications sent while the
    connection was down are lost, so the caller re-reads what it may have missed.
    """

    def __init__(
        self,
        url: str,
        channels: Iterable[str],
        callback: Callable[[str, str], None],
        *,
        on_reconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self._url = url
        self._channels = list(channels)
        self._callback = callback
        self._on_reconnect = on_reconnect
        self._stopped = threading.Event()
        self.listening = threading.Event()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        attempt = 0
        first = True
        while not self._stopped.is_set():
            try:
                with _connect(self._url) as conn:
                    for channel in self._channels:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.listening.set()
                    attempt = 0
                    if not first:
                        self._on_reconnect()
                    first = False
                    while not self._stopped.is_set():
                        for note in conn.notifies(timeout=0.5):
                            try:
                                self._callback(note.channel, note.payload)
                            except Exception:
                                log.exception("replicas.notify_callback_failed")
            except psycopg.Error as exc:
                self.listening.clear()
                if self._stopped.is_set():
                    return
                attempt += 1
                delay = min(RETRY_MAX_S, RETRY_MIN_S * 2**attempt) * random.uniform(0.5, 1.0)
                log.warning("replicas.listen_lost", error=str(exc).strip(), retry_s=round(delay, 2))
                self._stopped.wait(delay)
        self.listening.clear()


class Lease:
    """Leadership among replicas: ``is_held`` while this process holds the named lock.

    ``on_change(held)`` runs on the lease's thread when leadership is won or lost.
    Tries every ``retry_s`` while another replica holds it, and checks every
    ``retry_s`` that its own connection (and with it the lock) is still alive.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        retry_s: float = 2.0,
        on_change: Callable[[bool], None] = lambda held: None,
    ) -> None:
        self._url = url
        self.name = name
        self.key = lease_key(name)
        self._retry_s = retry_s
        self._on_change = on_change
        self._held = threading.Event()
        self._tried = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{name}", daemon=True)

    @property
    def is_held(self) -> bool:
        return self._held.is_set()

    def wait_held(self, timeout: float | None = None) -> bool:
        return self._held.wait(timeout)

    def start(self) -> Lease:
        self._thread.start()
        return self

    def wait_tried(self, timeout: float | None = None) -> bool:
        """Wait for the first try to take the lease (won or not)."""
        return self._tried.wait(timeout)

    def stop(self) -> None:
        """Give the lease up (closing the connection releases the lock)."""
        self._stopped.set()
        self._thread.join(timeout=10)

    def _set(self, held: bool) -> None:
        if held == self._held.is_set():
            return
        if held:
            self._held.set()
        else:
            self._held.clear()
        log.info("replicas.lease_won" if held else "replicas.lease_lost", lease=self.name)
        try:
            self._on_change(held)
        except Exception:
            log.exception("replicas.lease_callback_failed", lease=self.name)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                with _connect(self._url) as conn:
                    while not self._stopped.is_set():
                        if self.is_held:
                            conn.execute("SELECT 1")  # raises once the connection is gone
                        else:
                            row = conn.execute(
                                "SELECT pg_try_advisory_lock(%s)", (self.key,)
                            ).fetchone()
                            self._set(bool(row and row[0]))
                            self._tried.set()
                        self._stopped.wait(self._retry_s)
            except psycopg.Error as exc:
                self._tried.set()
                self._set(False)
                if not self._stopped.is_set():
                    log.warning("replicas.lease_connection_lost", error=str(exc).strip())
                    self._stopped.wait(self._retry_s * random.uniform(0.5, 1.0))
        self._set(False)


class AgentOwnership(Protocol):
    """What :class:`Liveness` needs of the fleet's records (blocking; run on its thread)."""

    def replicas_with_connected_agents(self, exclude: int) -> list[int]:
        """The replica ids other than ``exclude`` that agents are recorded connected at."""
        ...

    def release_replica(self, replica_id: int) -> int:
        """Record the agents connected at ``replica_id`` (which is gone) disconnected;
        how many."""
        ...


REPLICA_LOCK_CLASS = 0x5F1E  # two-key advisory locks (class, replica id): a replica lives
MAX_REPLICA_ID = 2**31 - 1


class Liveness:
    """This replica is alive while it holds the advisory lock (class, :attr:`replica_id`);
    every ``sweep_s`` it releases the agents of replicas whose lock is free (dead).

    The id is random (an advisory lock taken first makes it unique among live
    replicas). If the connection drops, another replica may sweep this one's agents
    meanwhile: on reconnecting it takes its lock again (a new id if the old one is
    taken) and calls ``on_identity(old, new)``, so the caller records the agents whose
    streams it still holds as connected here again.
    """

    def __init__(
        self,
        url: str,
        records: AgentOwnership,
        *,
        sweep_s: float = 2.0,
        on_identity: Callable[[int, int], None] = lambda old, new: None,
    ) -> None:
        self._url = url
        self._records = records
        self._sweep_s = sweep_s
        self._on_identity = on_identity
        self.replica_id = 0
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-liveness", daemon=True)

    def acquire(self) -> int:
        """Connect and take this replica's lock (blocking); its id."""
        self._conn = _connect(self._url)
        self.replica_id = self._take(self._conn, self.replica_id)
        log.info("replicas.alive", replica_id=self.replica_id)
        return self.replica_id

    def start(self) -> Liveness:
        """Keep the lock and sweep, on a thread (after :meth:`acquire`)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sweeping; closing the connection frees the lock."""
        self._stopped.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @staticmethod
    def _try(conn: psycopg.Connection[tuple[object, ...]], replica_id: int) -> bool:
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (REPLICA_LOCK_CLASS, replica_id)
        ).fetchone()
        return bool(row and row[0])

    def _take(self, conn: psycopg.Connection[tuple[object, ...]], wanted: int) -> int:
        if wanted and self._try(conn, wanted):
            return wanted
        while True:
            candidate = random.randint(1, MAX_REPLICA_ID)
            if self._try(conn, candidate):
                return candidate

    def sweep(self) -> int:
        """Release the agents of every replica that holds agents and no lock; how many."""
        conn = self._conn
        assert conn is not None, "acquire() first"
        released = 0
        for other in self._records.replicas_with_connected_agents(self.replica_id):
            if not self._try(conn, other):
                continue  # alive (or another replica is sweeping it right now)
            try:
                count = self._records.release_replica(other)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (REPLICA_LOCK_CLASS, other))
            log.info("replicas.replica_gone", replica_id=other, agents_disconnected=count)
            released += count
        return released

    def _run(self) -> None:
        attempt = 0
        while not self._stopped.is_set():
            try:
                if self._conn is None:
                    conn = _connect(self._url)
                    old = self.replica_id
                    self._conn = conn
                    self.replica_id = self._take(conn, old)
                    log.info("replicas.alive_again", replica_id=self.replica_id, was=old)
                    self._on_identity(old, self.replica_id)
                attempt = 0
                self.sweep()
            except (psycopg.Error, sa.exc.SQLAlchemyError) as exc:
                if self._stopped.is_set():
                    return
                if isinstance(exc, psycopg.Error) and self._conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        self._conn.close()
                    self._conn = None  # the lock went with it: take it again
                attempt += 1
                log.warning("replicas.liveness_error", error=str(exc).strip(), attempt=attempt)
            self._stopped.wait(self._sweep_s * random.uniform(0.75, 1.25))


ASSIGNMENTS = "spikefleet_assignments"  # payload: "<agent id> <generation>"
ROLLOUTS = "spikefleet_rollouts"  # payload: "<rollout id> <version>"
# payload: "<kind> <agent id>[\n<agent id>...]", kind a FleetEvent's (connected,
# disconnected, install, telemetry: only batches with shadow frames); agent id "" = any
# agent. Agent ids hold no control characters, so a newline separates them.
FLEET = "spikefleet_fleet"
ROLLOUT_LEASE = "rollouts"
PAYLOAD_MAX_BYTES = 7_900  # PostgreSQL's limit is 8,000 bytes by default


def fleet_payloads(kind: str, agent_ids: Sequence[str]) -> list[str]:
    """FLEET payloads saying ``kind`` happened to ``agent_ids``: as few as fit the
    payload limit (a group of Registers is one NOTIFY, not one per agent)."""
    payloads: list[str] = []
    names: list[str] = []
    size = 0
    for agent_id in agent_ids:
        cost = len(agent_id.encode()) + 1
        if names and size + cost > PAYLOAD_MAX_BYTES - len(kind) - 1:
            payloads.append(f"{kind} " + "\n".join(names))
            names, size = [], 0
        names.append(agent_id)
        size += cost
    if names:
        payloads.append(f"{kind} " + "\n".join(names))
    return payloads


def fleet_news(payload: str) -> tuple[str, list[str]]:
    """(kind, agent ids) of a FLEET payload (ids [""]: any agent)."""
    kind, _, agent_ids = payload.partition(" ")
    return kind, agent_ids.split("\n")


def notify(conn: Any, channel: str, payload: str) -> None:
    """Tell the other replicas, when ``conn``'s transaction commits (PostgreSQL only: on
    SQLite there is one server, which already knows)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_notify(:channel, :payload)"),
            {
                "channel": channel,
                "payload": payload,
            },
        )


class Coordination:
    """How one server's parts cooperate with other replicas. This base is one server
    alone (SQLite): it always leads, nobody else writes, its agents' rows are its own
    (replica id 0). Callbacks run on the server's event loop."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable[[str], None]]] = {}
        self._leadership: list[Callable[[bool], None]] = []

    @property
    def replica_id(self) -> int:
        """The id this replica's agents are recorded under (0: a lone server)."""
        return 0

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` for notifications other replicas send on ``channel``
        ("" after notifications may have been missed: re-read everything)."""
        self._subscribers.setdefault(channel, []).append(callback)

    def on_leadership(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(held)`` when this replica wins or loses the rollout lease."""
        self._leadership.append(callback)

    def track_agents(
        self, records: AgentOwnership, reclaim: Callable[[int, int], Awaitable[None]]
    ) -> None:
        """Release the agents of dead replicas in ``records``; after this replica's own
        liveness lapsed, ``reclaim(old_id, new_id)`` records its streams again."""

    def is_leader(self) -> bool:
        """Whether this server holds the rollout lease."""
        return True

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def _deliver(self, channel: str, payload: str) -> None:
        for callback in self._subscribers.get(channel, []):
            try:
                callback(payload)
            except Exception:
                log.exception("replicas.subscriber_failed", channel=channel)

    def _leadership_changed(self, held: bool) -> None:
        for callback in self._leadership:
            try:
                callback(held)
            except Exception:
                log.exception("replicas.leadership_callback_failed")


class Replicas(Coordination):
    """Replicas on one PostgreSQL at ``url``: notifications by LISTEN, the rollout lease
    and each replica's liveness by advisory locks."""

    def __init__(self, url: str, *, lease_retry_s: float = 2.0, sweep_s: float = 2.0) -> None:
        super().__init__()
        self._url = url
        self._lease_retry_s = lease_retry_s
        self._sweep_s = sweep_s
        self._listener: Listener | None = None
        self.lease: Lease | None = None
        self.liveness: Liveness | None = None
        self._records: AgentOwnership | None = None
        self._reclaim: Callable[[int, int], Awaitable[None]] | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def replica_id(self) -> int:
        return self.liveness.replica_id if self.liveness is not None else 0

    def track_agents(
        self, records: AgentOwnership, reclaim: Callable[[int, int], Awaitable[None]]
    ) -> None:
        self._records, self._reclaim = records, reclaim

    def is_leader(self) -> bool:
        return self.lease is not None and self.lease.is_held

    async def start(self) -> None:
        """Listen, take this replica's liveness lock, then try for the rollout lease once
        (so a lone replica leads from the moment it serves)."""
        loop = asyncio.get_running_loop()

        def heard(channel: str, payload: str) -> None:  # on the listener's thread
            loop.call_soon_threadsafe(self._deliver, channel, payload)

        def missed() -> None:  # notifications sent while we were away are gone
            for channel in list(self._subscribers):
                heard(channel, "")

        self._listener = Listener(self._url, list(self._subscribers), heard, on_reconnect=missed)
        self._listener.start()
        await asyncio.to_thread(self._listener.listening.wait, 10)
        if self._records is not None:

            def identity(old: int, new: int) -> None:  # on the liveness thread
                loop.call_soon_threadsafe(self._reclaim_soon, old, new)

            self.liveness = Liveness(
                self._url, self._records, sweep_s=self._sweep_s, on_identity=identity
            )
            await asyncio.to_thread(self.liveness.acquire)
            self.liveness.start()

        def leadership(held: bool) -> None:  # on the lease's thread
            loop.call_soon_threadsafe(self._leadership_changed, held)

        self.lease = Lease(
            self._url, ROLLOUT_LEASE, retry_s=self._lease_retry_s, on_change=leadership
        )
        self.lease.start()
        await asyncio.to_thread(self.lease.wait_tried, 10)

    def _reclaim_soon(self, old: int, new: int) -> None:
        if self._reclaim is None:
            return
        task = asyncio.ensure_future(self._reclaim(old, new))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self.lease is not None:
            await asyncio.to_thread(self.lease.stop)
        if self.liveness is not None:
            await asyncio.to_thread(self.liveness.stop)
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
