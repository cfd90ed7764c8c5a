"""Telemetry batches on disk until the server has them (SQLite, bounded).

Every batch gets the next sequence number when it is appended, whether or not
the server is reachable; the control channel sends from here in seq order and
deletes what the server acknowledged. When more than ``max_batches`` wait, the
oldest are dropped (and counted): nothing is lost within the bound.

Seqs are SQLite integers (at most 2**63-1); whatever number a server sends back
is clamped to that range, so a poisoned seq can't make a query fail.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from spikefleet.v1 import fleet_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('next_seq', 1), ('dropped', 0);
"""

INT64_MAX = 2**63 - 1


def _clamp(seq: int) -> int:
    return max(0, min(int(seq), INT64_MAX))


class Spool:
    def __init__(self, path: Path, max_batches: int = 100_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_batches = max_batches
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def _rollback(self) -> None:
        # SQLite ends the transaction itself on some errors (disk full): a second
        # ROLLBACK would fail and hide the error that matters
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def append(self, batch: fleet_pb2.TelemetryBatch, lost: int = 0) -> int:
        """Give ``batch`` the next seq and store it; return the seq. ``lost`` batches that
        never reached the spool (it could not be written) are added to the dropped count,
        which the batch carries as ``spool_dropped``. On failure nothing changes."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (seq,) = self._db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
                if lost:
                    self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped'", (lost,))
                (dropped,) = self._db.execute(
                    "SELECT value FROM meta WHERE key='dropped'"
                ).fetchone()
                batch.seq = seq
                batch.spool_dropped = dropped
                self._db.execute(
                    "INSERT INTO batches VALUES (?, ?)", (seq, batch.SerializeToString())
                )
                self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,))
                (count,) = self._db.execute("SELECT COUNT(*) FROM batches").fetchone()
                if count > self.max_batches:
                    excess = count - self.max_batches
                    self._db.execute(
                        "DELETE FROM batches WHERE seq IN "
                        "(SELECT seq FROM batches ORDER BY seq LIMIT ?)",
                        (excess,),
                    )
                    self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped'", (excess,))
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            return int(seq)

    def pending(self, after_seq: int, limit: int = 64) -> list[fleet_pb2.TelemetryBatch]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
                (_clamp(after_seq), limit),
            ).fetchall()
        return [fleet_pb2.TelemetryBatch.FromString(body) for (body,) in rows]

    def rebase(self, server_seq: int) -> bool:
        """The server already holds seqs up to ``server_seq`` that this spool never issued
        (its state directory was wiped, the agent id reused): renumber what waits here to
        follow them, so new batches are not mistaken for ones already stored.

        False when they cannot follow (``server_seq`` is so close to 2**63-1 that no seq
        is left after it, which only a forged batch does): nothing changes, and the
        caller keeps this spool's own numbering instead of being cut off."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (next_seq,) = self._db.execute(
                    "SELECT value FROM meta WHERE key='next_seq'"
                ).fetchone()
                if next_seq > server_seq:
                    self._db.execute("COMMIT")
                    return True
                (count,) = self._db.execute("SELECT COUNT(*) FROM batches").fetchone()
                # room for what waits, and for a year of one batch a second after it
                if server_seq > INT64_MAX - count - 2**25:
                    self._db.execute("COMMIT")
                    return False
                rows = self._db.execute("SELECT seq, body FROM batches ORDER BY seq").fetchall()
                self._db.execute("DELETE FROM batches")
                seq = server_seq
                for _, body in rows:
                    seq += 1
                    batch = fleet_pb2.TelemetryBatch.FromString(body)
                    batch.seq = seq
                    self._db.execute(
                        "INSERT INTO batches VALUES (?, ?)", (seq, batch.SerializeToString())
                    )
                self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,))
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            return True

    def ack(self, seq: int) -> None:
        """The server stored (or refused) everything up to ``seq``."""
        with self._lock:
            self._db.execute("DELETE FROM batches WHERE seq <= ?", (_clamp(seq),))

    def depth(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM batches").fetchone()
        return int(count)

    def dropped(self) -> int:
        with self._lock:
            (value,) = self._db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
        return int(value)

    def close(self) -> None:
        with self._lock:
            self._db.close()
