"""Signed programs, stored content-addressed, with metadata in the database.

On SQLite (one server) the bytes are files in the data dir; on PostgreSQL, where
replicas share no disk, they are rows of ``program_blobs`` written in the same
transaction as the program's row, and checked against their sha256 (the
envelope's and the program bytes' digest) every time they are read.

A program's file (``programs/<aa>/<sha256>.sfp``, the SignedProgram envelope)
is written with write-temp, fsync, rename *before* its row commits, so a crash
at any point leaves either a complete program with its row, or an orphan file
that the next start removes: never a row without its bytes. ``sha256`` is the
digest of the program bytes (what agents verify), so storing the same program
twice returns the first record instead of a new version.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from spikefleet.errors import ProgramInUseError, ProgramNotFoundError, RegistryError
from spikefleet.program.atomic import atomic_write
from spikefleet.program.signing import SignedProgram, SigningKey, sign
from spikefleet.wire.registry import ProgramInfo
from spikefleet_server.storage import Database
from spikefleet_server.storage.schema import program_blobs, program_versions, programs
from spikefleet_server.storage.sql import insert

log = structlog.get_logger("spikefleet_server.registry")

ProgramUsage = Callable[[Connection, str], Sequence[str]]
"""Given the delete's connection and a program sha256, the agents that run or are
assigned that program (empty: free to delete)."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]+$")
MIN_PREFIX = 8


def _record(row: Any) -> ProgramInfo:
    return ProgramInfo(
        sha256=row.sha256,
        name=row.name,
        version=row.version,
        labels=json.loads(row.labels),
        fidelity=json.loads(row.fidelity),
        created_unix_ms=row.created_unix_ms,
        size=row.size,
        key_id=row.key_id,
        source_sha256=row.source_sha256,
    )


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise RegistryError(
            f"invalid program name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


class Registry:
    """The registry area: ``db`` holds the metadata (tables ``programs`` and
    ``program_versions``), ``root`` the signed program files. Its methods are async and
    do their blocking work (files, transactions) on the storage threads."""

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
        self.in_database = db.dialect == "postgresql"  # replicas share no disk
        if not self.in_database:
            self.root.mkdir(parents=True, exist_ok=True)
            self._remove_orphans()

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.sfp"

    def _remove_orphans(self) -> None:
        """Files a crash left behind: temp files, and programs whose row never committed."""
        with self.db.read() as conn:
            known = set(conn.scalars(sa.select(programs.c.sha256)))
        for path in self.root.glob("*/*"):
            orphan = path.name.endswith(".tmp") or path.stem not in known
            if orphan and path.is_file():
                path.unlink()
                log.info("registry.orphan_removed", path=str(path))
        missing = [sha for sha in known if not self._path(sha).is_file()]
        if missing:
            log.error("registry.files_missing", sha256=missing)

    async def put(
        self,
        program: bytes,
        *,
        name: str,
        labels: Mapping[str, str] | None = None,
        fidelity: Mapping[str, Any] | None = None,
        source_sha256: str = "",
    ) -> ProgramInfo:
        """Sign and store ``program``; the next version of ``name``, or the existing
        record when these exact program bytes are already stored."""
        return await self.db.run(
            self._put, program, name, dict(labels or {}), dict(fidelity or {}), source_sha256
        )

    def _put(
        self,
        program: bytes,
        name: str,
        labels: dict[str, str],
        fidelity: dict[str, Any],
        source_sha256: str,
    ) -> ProgramInfo:
        check_name(name)
        signed = sign(program, self.signing_key)
        existing = self._find_sha(signed.sha256)
        if existing is not None:
            return existing
        envelope = signed.to_bytes()
        if not self.in_database:
            path = self._path(signed.sha256)
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, envelope)
        with self.db.write() as conn:
            row = conn.execute(
                sa.select(programs).where(programs.c.sha256 == signed.sha256).with_for_update()
            ).first()
            if row is not None:
                return _record(row)
            bump = insert(conn, program_versions).values(name=name, last_version=1)
            bump = bump.on_conflict_do_update(
                index_elements=[program_versions.c.name],
                set_={"last_version": program_versions.c.last_version + 1},
            ).returning(program_versions.c.last_version)
            version = int(conn.execute(bump).scalar_one())
            record = ProgramInfo(
                sha256=signed.sha256,
                name=name,
                version=version,
                labels=labels,
                fidelity=fidelity,
                created_unix_ms=int(time.time() * 1000),
                size=len(envelope),
                key_id=signed.key_id,
                source_sha256=source_sha256,
            )
            if self.in_database:
                conn.execute(sa.insert(program_blobs).values(sha256=record.sha256, data=envelope))
            conn.execute(
                sa.insert(programs).values(
                    sha256=record.sha256,
                    name=record.name,
                    version=record.version,
                    labels=json.dumps(record.labels, sort_keys=True),
                    fidelity=json.dumps(record.fidelity, sort_keys=True),
                    created_unix_ms=record.created_unix_ms,
                    size=record.size,
                    key_id=record.key_id,
                    source_sha256=record.source_sha256,
                )
            )
        log.info("registry.stored", sha256=record.sha256, name=name, version=version)
        return record

    @staticmethod
    def require(conn: Connection, sha256: str) -> None:
        """Inside another area's write transaction on the same database: raise
        ProgramNotFoundError unless the program is stored, and keep it stored until that
        transaction ends (see :meth:`delete`)."""
        found = conn.execute(
            sa.select(programs.c.sha256)
            .where(programs.c.sha256 == sha256)
            .with_for_update(read=True)
        ).first()
        if found is None:
            raise ProgramNotFoundError(f"no program with sha256 {sha256} in the registry")

    def _find_sha(self, sha256: str) -> ProgramInfo | None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(programs).where(programs.c.sha256 == sha256)).first()
        return _record(row) if row is not None else None

    async def describe(self, ref: str, version: int | None = None) -> ProgramInfo:
        """The program a sha256 (or a unique prefix of 8+ hex digits) or a name names;
        with a name, ``version`` picks one (default: the latest)."""
        return await self.db.run(self._describe, ref, version)

    def _describe(self, ref: str, version: int | None) -> ProgramInfo:
        ref = ref.strip()
        if not ref:
            raise ProgramNotFoundError("no program given: pass a sha256 or a name")
        with self.db.read() as conn:
            if version is None and len(ref) >= MIN_PREFIX and _HEX.match(ref.lower()):
                rows = conn.execute(
                    sa.select(programs)
                    .where(programs.c.sha256.startswith(ref.lower(), autoescape=True))
                    .limit(2)
                ).all()
                if len(rows) == 1:
                    return _record(rows[0])
                if len(rows) > 1:
                    raise RegistryError(
                        f"sha256 prefix {ref!r} matches several programs: give more"
                    )
            query = sa.select(programs).where(programs.c.name == ref)
            if version is None or version == 0:
                query = query.order_by(programs.c.version.desc()).limit(1)
            else:
                query = query.where(programs.c.version == version)
            row = conn.execute(query).first()
        if row is None:
            which = f"{ref!r} version {version}" if version else repr(ref)
            raise ProgramNotFoundError(
                f"no program {which} in the registry (see 'spikefleet programs list')"
            )
        return _record(row)

    async def get_bytes(self, sha256: str) -> bytes:
        """The signed program (SignedProgram envelope) with this exact sha256."""
        return await self.db.run(self._get_bytes, sha256)

    def _get_bytes(self, sha256: str) -> bytes:
        record = self._find_sha(sha256)
        if record is None:
            raise ProgramNotFoundError(f"no program with sha256 {sha256} in the registry")
        if not self.in_database:
            data = self._path(sha256).read_bytes()
            if SignedProgram.from_bytes(data).sha256 != sha256:
                raise RegistryError(f"stored file of program {sha256} is corrupt")
            return data
        with self.db.read() as conn:
            blob = conn.scalar(
                sa.select(program_blobs.c.data).where(program_blobs.c.sha256 == sha256)
            )
        if blob is None:
            raise RegistryError(f"the bytes of program {sha256} are missing from the database")
        data = bytes(blob)
        envelope = SignedProgram.from_bytes(data)
        if envelope.sha256 != sha256 or hashlib.sha256(envelope.program).hexdigest() != sha256:
            raise RegistryError(
                f"the stored bytes of program {sha256} do not match its sha256 (corrupted in "
                "the database): delete it and convert it again"
            )
        return data

    async def list(
        self,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        latest_only: bool = False,
    ) -> list[ProgramInfo]:
        """Programs by name then version; ``labels`` must all match."""
        return await self.db.run(self._list, name, dict(labels or {}), latest_only)

    def _list(
        self, name: str | None, labels: dict[str, str], latest_only: bool
    ) -> builtins.list[ProgramInfo]:
        query = sa.select(programs).order_by(programs.c.name, programs.c.version)
        if name:
            query = query.where(programs.c.name == name)
        with self.db.read() as conn:
            records = [_record(r) for r in conn.execute(query)]
        if labels:
            records = [r for r in records if all(r.labels.get(k) == v for k, v in labels.items())]
        if latest_only:
            newest: dict[str, ProgramInfo] = {}
            for record in records:
                newest[record.name] = record
            records = list(newest.values())
        return records

    async def delete(self, sha256: str) -> ProgramInfo:
        """Remove a program, unless :attr:`usage` says agents run or are assigned it.

        The check and the delete share one write transaction holding the program's row,
        and assignments check the program inside theirs (:meth:`require`), so neither
        can slip between."""
        return await self.db.run(self._delete, sha256)

    def _delete(self, sha256: str) -> ProgramInfo:
        with self.db.write() as conn:
            row = conn.execute(
                sa.select(programs).where(programs.c.sha256 == sha256).with_for_update()
            ).first()
            if row is None:
                raise ProgramNotFoundError(f"no program with sha256 {sha256} in the registry")
            record = _record(row)
            users = list(self.usage(conn, sha256)) if self.usage is not None else []
            if users:
                shown = ", ".join(sorted(users)[:5]) + (" ..." if len(users) > 5 else "")
                raise ProgramInUseError(
                    f"program {record.name} v{record.version} ({sha256[:12]}) is in use by "
                    f"{len(users)} agent(s): {shown}; roll them to another program first"
                )
            conn.execute(sa.delete(programs).where(programs.c.sha256 == sha256))
            conn.execute(sa.delete(program_blobs).where(program_blobs.c.sha256 == sha256))
        if not self.in_database:
            self._path(sha256).unlink(missing_ok=True)
        log.info("registry.deleted", sha256=sha256, name=record.name, version=record.version)
        return record

    def stats(self) -> tuple[int, int]:
        """(number of programs, total bytes stored); blocking, for the metrics thread."""
        query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(programs.c.size), 0))
        with self.db.read() as conn:
            count, size = conn.execute(query).one()
        return int(count), int(size)
