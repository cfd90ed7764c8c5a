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

Both reconnect on their own with backoff, and both talk psycopg directly (one
long-lived connection each, outside the storage layer's pool).
"""

from __future__ import annotations

import asyncio
import random
import threading
import zlib
from collections.abc import Callable, Iterable
from typing import Any

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
                        self._stopped.wait(self._retry_s)
            except psycopg.Error as exc:
                self._set(False)
                if not self._stopped.is_set():
                    log.warning("replicas.lease_connection_lost", error=str(exc).strip())
                    self._stopped.wait(self._retry_s * random.uniform(0.5, 1.0))
        self._set(False)


ASSIGNMENTS = "spikefleet_assignments"  # payload: agent id
ROLLOUTS = "spikefleet_rollouts"  # payload: rollout id
ROLLOUT_LEASE = "rollouts"


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
    alone (SQLite): it always leads, and nobody else writes. Callbacks run on the
    server's event loop."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable[[str], None]]] = {}

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` for notifications other replicas send on ``channel``
        ("" after notifications may have been missed: re-read everything)."""
        self._subscribers.setdefault(channel, []).append(callback)

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


class Replicas(Coordination):
    """Replicas on one PostgreSQL at ``url``: notifications by LISTEN, the rollout lease
    by advisory lock."""

    def __init__(self, url: str, *, lease_retry_s: float = 2.0) -> None:
        super().__init__()
        self._url = url
        self._listener: Listener | None = None
        self.lease = Lease(url, ROLLOUT_LEASE, retry_s=lease_retry_s)

    def is_leader(self) -> bool:
        return self.lease.is_held

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def heard(channel: str, payload: str) -> None:  # on the listener's thread
            loop.call_soon_threadsafe(self._deliver, channel, payload)

        def missed() -> None:  # notifications sent while we were away are gone
            for channel in list(self._subscribers):
                heard(channel, "")

        self._listener = Listener(self._url, list(self._subscribers), heard, on_reconnect=missed)
        self._listener.start()
        await asyncio.to_thread(self._listener.listening.wait, 10)
        self.lease.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.lease.stop)
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
