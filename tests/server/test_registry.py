"""The registry stores signed programs durably, findable by sha256 or name/version.

Every test here runs on SQLite and on PostgreSQL (``database_target``), except the
one about the files SQLite keeps program bytes in.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from support.aio import Blocking

from spikefleet.errors import ProgramInUseError, ProgramNotFoundError, RegistryError
from spikefleet.program.signing import SigningKey, TrustedKeys, verify
from spikefleet_server.registry import Registry
from spikefleet_server.storage import open_database
from spikefleet_server.storage.schema import program_blobs


def open_registry(root: Path, key: SigningKey, target: str | Path | None = None) -> Any:
    database = open_database(target or root / "spikefleet.db")
    return Blocking(Registry(root / "programs", database, key))


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def test_put_signs_and_stores_and_versions_count_up_per_name(
    tmp_path: Path, key: SigningKey, database_target: str | Path
):
    registry = open_registry(tmp_path, key, database_target)
    first = registry.put(b"program one", name="digits", labels={"task": "nd"}, fidelity={"a": 1})
    second = registry.put(b"program two", name="digits")
    other = registry.put(b"program three", name="other")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.sha256 == hashlib.sha256(b"program one").hexdigest()
    assert first.key_id == key.key_id
    signed = registry.get_bytes(first.sha256)
    assert verify(signed, TrustedKeys([key.public_key])) == b"program one"
    assert first.size == len(signed)
    assert registry.describe(first.sha256) == first
    assert registry.describe("digits") == second
    assert registry.describe("digits", 1) == first
    assert registry.describe(first.sha256[:8]) == first
    assert registry.describe("digits").labels == {}
    assert first.labels == {"task": "nd"} and first.fidelity == {"a": 1}


def test_storing_the_same_program_again_returns_the_stored_record(
    tmp_path: Path, key: SigningKey, database_target: str | Path
):
    registry = open_registry(tmp_path, key, database_target)
    first = registry.put(b"same bytes", name="digits")
    again = registry.put(b"same bytes", name="digits")
    assert again == first
    assert [r.version for r in registry.list()] == [1]


def test_list_filters_by_name_labels_and_latest(
    tmp_path: Path, key: SigningKey, database_target: str | Path
):
    registry = open_registry(tmp_path, key, database_target)
    registry.put(b"a1", name="a", labels={"stage": "dev"})
    registry.put(b"a2", name="a", labels={"stage": "prod"})
    registry.put(b"b1", name="b", labels={"stage": "prod"})
    assert [(r.name, r.version) for r in registry.list()] == [("a", 1), ("a", 2), ("b", 1)]
    assert [(r.name, r.version) for r in registry.list(name="a")] == [("a", 1), ("a", 2)]
    prod = registry.list(labels={"stage": "prod"})
    assert [(r.name, r.version) for r in prod] == [("a", 2), ("b", 1)]
    assert [(r.name, r.version) for r in registry.list(latest_only=True)] == [("a", 2), ("b", 1)]
    assert registry.stats() == (3, sum(r.size for r in registry.list()))


def test_unknown_programs_and_bad_names_are_named_errors(
    tmp_path: Path, key: SigningKey, database_target: str | Path
):
    registry = open_registry(tmp_path, key, database_target)
    with pytest.raises(ProgramNotFoundError, match="no program 'nope'"):
        registry.describe("nope")
    registry.put(b"x", name="nope")
    with pytest.raises(ProgramNotFoundError, match="version 3"):
        registry.describe("nope", 3)
    with pytest.raises(ProgramNotFoundError, match="sha256"):
        registry.get_bytes("0" * 64)
    with pytest.raises(RegistryError, match="invalid program name"):
        registry.put(b"y", name="../etc/passwd")
    assert [r.name for r in registry.list()] == ["nope"]


def test_delete_removes_row_and_bytes_but_versions_never_reuse(
    tmp_path: Path, key: SigningKey, database_target: str | Path
):
    registry = open_registry(tmp_path, key, database_target)
    record = registry.put(b"v1", name="digits")
    registry.delete(record.sha256)
    with pytest.raises(ProgramNotFoundError):
        registry.describe(record.sha256)
    with pytest.raises(ProgramNotFoundError):
        registry.get_bytes(record.sha256)
    assert list((tmp_path / "programs").glob("*/*.sfp")) == []  # SQLite keeps files
    with registry.db.read() as conn:  # PostgreSQL keeps rows
        assert conn.scalar(sa.select(sa.func.count()).select_from(program_blobs)) == 0
    assert registry.put(b"v2", name="digits").version == 2


def test_delete_is_refused_while_agents_use_the_program(
    tmp_path: Path, key: SigningKey, database_target: str | Path
):
    db = open_database(database_target)
    assignments = sa.Table(
        "assignments", sa.MetaData(), sa.Column("agent_id", sa.Text), sa.Column("sha256", sa.Text)
    )
    with db.write() as conn:
        assignments.create(conn)

    def agents_using(conn: Connection, sha256: str) -> list[str]:
        rows = conn.execute(sa.select(assignments.c.agent_id).where(assignments.c.sha256 == sha256))
        return [row.agent_id for row in rows]

    registry = Blocking(Registry(tmp_path / "programs", db, key, usage=agents_using))
    record = registry.put(b"deployed", name="digits")
    with db.write() as conn:
        conn.execute(sa.insert(assignments).values(agent_id="edge-7", sha256=record.sha256))
    with pytest.raises(ProgramInUseError, match=r"in use by 1 agent.*edge-7"):
        registry.delete(record.sha256)
    assert registry.get_bytes(record.sha256)
    with db.write() as conn:
        conn.execute(sa.delete(assignments))
    assert registry.delete(record.sha256) == record


def test_reopening_keeps_every_program_and_removes_what_a_crash_left(tmp_path: Path, key):
    """SQLite only: there the bytes are files beside the database."""
    registry = open_registry(tmp_path, key)
    kept = registry.put(b"kept", name="digits")
    registry.db.close()
    shard = tmp_path / "programs" / "ab"
    shard.mkdir()
    (shard / ".half-written.sfp.tmp").write_bytes(b"partial")
    orphan = shard / f"ab{'0' * 62}.sfp"
    orphan.write_bytes(b"file written, row never committed")

    reopened = open_registry(tmp_path, key)
    assert reopened.list() == [kept]
    assert verify(reopened.get_bytes(kept.sha256), TrustedKeys([key.public_key])) == b"kept"
    assert list(shard.iterdir()) == []
