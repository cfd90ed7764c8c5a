"""Telemetry ingest with group commit: many agents' batches, one transaction, then acks.

The agents' periodic "still here" (last_seen) refreshes ride along in the
same transactions, so the writes a connected fleet keeps making never
contend for SQLite's write lock.

An ack tells the agent it may delete the batch from its spool, so it is sent
only after the batch is durably committed. Committing each batch alone costs
one fsync per batch (about 270 batches/s measured here); one writer thread that
commits whatever has queued up meanwhile keeps that guarantee at fleet scale.
Batches of one agent arrive from one reader and stay in FIFO order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import structlog

from spikefleet.v1 import fleet_pb2
from spikefleet_server.fleet.store import FleetStore

log = structlog.get_logger(__name__)

Done = Callable[[bool], None]  # called with "was new" after the commit
_Item = tuple[str, fleet_pb2.TelemetryBatch | None, Done | None]  # batch None: last_seen


class TelemetryWriter:
    def __init__(self, store: FleetStore, max_group: int = 1000) -> None:
        self._store = store
        self._max_group = max_group
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="fleet-telemetry", daemon=True)
        self._thread.start()

    def submit(self, agent_id: str, batch: fleet_pb2.TelemetryBatch, done: Done | None) -> None:
        self._queue.put((agent_id, batch, done))

    def seen(self, agent_id: str) -> None:
        """Refresh the agent's last_seen with the next group."""
        self._queue.put((agent_id, None, None))

    def pending(self) -> int:
        """Batches and refreshes submitted and not yet committed (how far ingest lags)."""
        return self._queue.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group: list[_Item] = [first]
            stop = False
            while len(group) < self._max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            batches = [(a, b, d) for a, b, d in group if b is not None]
            seen = [a for a, b, _ in group if b is None]
            try:
                stored = self._store.ingest_many([(a, b) for a, b, _ in batches], seen)
            except Exception:
                log.exception("fleet.telemetry_commit_failed", items=len(group))
                stored = None  # no acks: the agents keep these and resend on reconnect
            if stored is not None:
                for (_, _, done), new in zip(batches, stored, strict=True):
                    try:
                        if done is not None:
                            done(new)
                    except Exception:
                        log.exception("fleet.telemetry_ack_failed")
            if stop:
                return
