"""On PostgreSQL the registry keeps program bytes in the database: every replica reads the
same programs without a shared disk, and bytes that no longer match their sha256 are
refused when read."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from support.aio import Blocking

from spikefleet.errors import ProgramNotFoundError, RegistryError
from spikefleet.program.signing import SigningKey, TrustedKeys, verify
from spikefleet_server.registry import Registry
from spikefleet_server.storage import Database, upgrade
from spikefleet_server.storage.schema import program_blobs


@pytest.fixture
def db(postgres_url: str):
    database = Database(postgres_url)
    upgrade(database)
    yield database
    database.close()


def test_a_program_stored_by_one_replica_is_served_by_another(db: Database, tmp_path: Path):
    key = SigningKey.generate()
    first = Blocking(Registry(tmp_path / "a", db, key))
    record = first.put(b"program bytes", name="digits")
    second = Blocking(Registry(tmp_path / "b", db, key))  # its own (empty) data dir
    assert verify(second.get_bytes(record.sha256), TrustedKeys([key.public_key])) == (
        b"program bytes"
    )
    assert not any((tmp_path / "a").glob("**/*.sfp"))  # nothing on disk
    second.delete(record.sha256)
    with pytest.raises(ProgramNotFoundError):
        first.get_bytes(record.sha256)
    with db.read() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(program_blobs)) == 0


def test_bytes_changed_in_the_database_are_refused_when_read(db: Database, tmp_path: Path):
    registry = Blocking(Registry(tmp_path, db, SigningKey.generate()))
    record = registry.put(b"program bytes", name="digits")
    with db.write() as conn:
        data = bytearray(conn.scalar(sa.select(program_blobs.c.data)))
        data[-3] ^= 0x01  # one bit of the program, after the envelope's header
        conn.execute(sa.update(program_blobs).values(data=bytes(data)))
    with pytest.raises(RegistryError, match="do not match its sha256"):
        registry.get_bytes(record.sha256)
