"""Signed programs, stored content-addressed on disk, with metadata in SQLite.

A program's file (``programs/<aa>/<sha256>.sfp``, the SignedProgram envelope)
is written with write-temp, fsync, rename *before* its row commits, so a crash
at any point leaves either a complete program with its row, or an orphan file
that the next start removes: never a row without its bytes. ``sha256`` is the
digest of the program bytes (what agents verify), so storing the same program
twice returns the first record instead of a new version.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from spikefleet.errors import ProgramInUseError, ProgramNotFoundError, RegistryError
from spikefleet.program.atomic import atomic_write
from spikefleet.program.signing import SignedProgram, SigningKey, sign
from spikefleet_server.db import Database

log = structlog.get_logger("spikefleet_server.registry")

ProgramUsage = Callable[[str], Sequence[str]]
"""Given a program sha256, the agents that run or are assigned it (empty: free to delete)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS programs (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    labels TEXT NOT NULL,
    fidelity TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE IF NOT EXISTS program_versions (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
"""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]+$")
MIN_PREFIX = 8


@dataclass(frozen=True)
class ProgramRecord:
    sha256: str
    name: str
    version: int
    labels: dict[str, str] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)
    created_unix_ms: int = 0
    size: int = 0
    key_id: str = ""
    source_sha256: str = ""


def _record(row: Any) -> ProgramRecord:
    return ProgramRecord(
        sha256=row["sha256"],
        name=row["name"],
        version=row["version"],
        labels=json.loads(row["labels"]),
        fidelity=json.loads(row["fidelity"]),
        created_unix_ms=row["created_unix_ms"],
        size=row["size"],
        key_id=row["key_id"],
        source_sha256=row["source_sha256"],
    )


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise RegistryError(
            f"invalid program name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


class Registry:
    def __init__(
        self,
        root: str | Path,
        db: Database,
        signing_key: SigningKey,
        *,
        usage: ProgramUsage | None = None,
    ) -> None:
        self.root = Path(root)
        self.db = db
        self.signing_key = signing_key
        self.usage = usage
        self.root.mkdir(parents=True, exist_ok=True)
        db.ensure_schema(SCHEMA)
        self._remove_orphans()

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.sfp"

    def _remove_orphans(self) -> None:
        """Files a crash left behind: temp files, and programs whose row never committed."""
        known = {r["sha256"] for r in self.db.connection().execute("SELECT sha256 FROM programs")}
        for path in self.root.glob("*/*"):
            orphan = path.name.endswith(".tmp") or path.stem not in known
            if orphan and path.is_file():
                path.unlink()
                log.info("registry.orphan_removed", path=str(path))
        missing = [sha for sha in known if not self._path(sha).is_file()]
        if missing:
            log.error("registry.files_missing", sha256=missing)

    def put(
        self,
        program: bytes,
        *,
        name: str,
        labels: Mapping[str, str] | None = None,
        fidelity: Mapping[str, Any] | None = None,
        source_sha256: str = "",
    ) -> ProgramRecord:
        """Sign and store ``program``; the next version of ``name``, or the existing
        record when these exact program bytes are already stored."""
        check_name(name)
        signed = sign(program, self.signing_key)
        existing = self._find_sha(signed.sha256)
        if existing is not None:
            return existing
        envelope = signed.to_bytes()
        path = self._path(signed.sha256)
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, envelope)
        with self.db.transaction() as conn:
            again = conn.execute("SELECT * FROM programs WHERE sha256 = ?", (signed.sha256,))
            row = again.fetchone()
            if row is not None:
                return _record(row)
            last = conn.execute(
                "SELECT last_version FROM program_versions WHERE name = ?", (name,)
            ).fetchone()
            version = (last["last_version"] if last else 0) + 1
            conn.execute(
                "INSERT INTO program_versions (name, last_version) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_version = excluded.last_version",
                (name, version),
            )
            record = ProgramRecord(
                sha256=signed.sha256,
                name=name,
                version=version,
                labels=dict(labels or {}),
                fidelity=dict(fidelity or {}),
                created_unix_ms=int(time.time() * 1000),
                size=len(envelope),
                key_id=signed.key_id,
                source_sha256=source_sha256,
            )
            conn.execute(
                "INSERT INTO programs (sha256, name, version, labels, fidelity, "
                "created_unix_ms, size, key_id, source_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.sha256,
                    record.name,
                    record.version,
                    json.dumps(record.labels, sort_keys=True),
                    json.dumps(record.fidelity, sort_keys=True),
                    record.created_unix_ms,
                    record.size,
                    record.key_id,
                    record.source_sha256,
                ),
            )
        log.info("registry.stored", sha256=record.sha256, name=name, version=version)
        return record

    @staticmethod
    def require(conn: sqlite3.Connection, sha256: str) -> None:
        """Inside another area's write transaction on the same database: raise
        ProgramNotFoundError unless the program is stored (see :meth:`delete`)."""
        if conn.execute("SELECT 1 FROM programs WHERE sha256 = ?", (sha256,)).fetchone() is None:
            raise ProgramNotFoundError(f"no program with sha256 {sha256} in the registry")

    def _find_sha(self, sha256: str) -> ProgramRecord | None:
        row = (
            self.db.connection()
            .execute("SELECT * FROM programs WHERE sha256 = ?", (sha256,))
            .fetchone()
        )
        return _record(row) if row is not None else None

    def describe(self, ref: str, version: int | None = None) -> ProgramRecord:
        """The program a sha256 (or a unique prefix of 8+ hex digits) or a name names;
        with a name, ``version`` picks one (default: the latest)."""
        conn = self.db.connection()
        ref = ref.strip()
        if not ref:
            raise ProgramNotFoundError("no program given: pass a sha256 or a name")
        if version is None and len(ref) >= MIN_PREFIX and _HEX.match(ref.lower()):
            rows = conn.execute(
                "SELECT * FROM programs WHERE sha256 LIKE ? LIMIT 2", (ref.lower() + "%",)
            ).fetchall()
            if len(rows) == 1:
                return _record(rows[0])
            if len(rows) > 1:
                raise RegistryError(f"sha256 prefix {ref!r} matches several programs: give more")
        if version is None or version == 0:
            row = conn.execute(
                "SELECT * FROM programs WHERE name = ? ORDER BY version DESC LIMIT 1", (ref,)
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT * FROM programs WHERE name = ? AND version = ?", (ref, version)
            ).fetchone()
        if row is None:
            which = f"{ref!r} version {version}" if version else repr(ref)
            raise ProgramNotFoundError(
                f"no program {which} in the registry (see 'spikefleet programs list')"
            )
        return _record(row)

    def get_bytes(self, sha256: str) -> bytes:
        """The signed program (SignedProgram envelope) with this exact sha256."""
        record = self._find_sha(sha256)
        if record is None:
            raise ProgramNotFoundError(f"no program with sha256 {sha256} in the registry")
        data = self._path(sha256).read_bytes()
        if SignedProgram.from_bytes(data).sha256 != sha256:
            raise RegistryError(f"stored file of program {sha256} is corrupt")
        return data

    def list(
        self,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        latest_only: bool = False,
    ) -> list[ProgramRecord]:
        """Programs by name then version; ``labels`` must all match."""
        query = "SELECT * FROM programs"
        params: tuple[str, ...] = ()
        if name:
            query += " WHERE name = ?"
            params = (name,)
        rows = self.db.connection().execute(query + " ORDER BY name, version", params)
        records = [_record(r) for r in rows]
        if labels:
            records = [r for r in records if all(r.labels.get(k) == v for k, v in labels.items())]
        if latest_only:
            newest: dict[str, ProgramRecord] = {}
            for record in records:
                newest[record.name] = record
            records = list(newest.values())
        return records

    def delete(self, sha256: str) -> ProgramRecord:
        """Remove a program, unless :attr:`usage` says agents run or are assigned it.

        The check and the delete share one write transaction, and assignments check
        the program inside theirs (:meth:`require`), so neither can slip between."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM programs WHERE sha256 = ?", (sha256,)).fetchone()
            if row is None:
                raise ProgramNotFoundError(f"no program with sha256 {sha256} in the registry")
            record = _record(row)
            users = list(self.usage(sha256)) if self.usage is not None else []
            if users:
                shown = ", ".join(sorted(users)[:5]) + (" ..." if len(users) > 5 else "")
                raise ProgramInUseError(
                    f"program {record.name} v{record.version} ({sha256[:12]}) is in use by "
                    f"{len(users)} agent(s): {shown}; roll them to another program first"
                )
            conn.execute("DELETE FROM programs WHERE sha256 = ?", (sha256,))
        self._path(sha256).unlink(missing_ok=True)
        log.info("registry.deleted", sha256=sha256, name=record.name, version=record.version)
        return record

    def stats(self) -> tuple[int, int]:
        """(number of programs, total bytes stored)."""
        row = (
            self.db.connection()
            .execute("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM programs")
            .fetchone()
        )
        return int(row["n"]), int(row["b"])
