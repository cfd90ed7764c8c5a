"""What a Register costs the database, and what its one transaction must not lose.

A fleet redialling after a replica died registers thousands of agents at once, so
a Register is one transaction: the agent's row, its last stored telemetry seq and
its desired state, read back in that transaction. An assignment made meanwhile
still reaches the agent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fleet_helpers import FleetServer
from support.aio import Blocking
from support.raw_agent import RawAgent
from support.waiting import wait_for

from spikefleet.v1 import fleet_pb2
from spikefleet_server.fleet.store import FleetStore, Registration
from spikefleet_server.storage import Database, open_database
from spikefleet_server.storage import database as database_module
from spikefleet_server.telemetry import TelemetryStore


@pytest.fixture
def db(database_target: str | Path) -> Iterator[Database]:
    database = open_database(database_target)
    yield database
    database.close()


class Statements:
    """Counts the statements and commits a database's engine runs."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.statements: list[str] = []
        self.commits = 0
        sa.event.listen(engine, "before_cursor_execute", self._statement)
        sa.event.listen(engine, "commit", self._commit)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("BEGIN"):  # SQLite's explicit BEGIN (IMMEDIATE)
            return
        kind = "NOTIFY" if "pg_notify" in statement else statement.split()[0].upper()
        self.statements.append(kind)

    def _commit(self, _conn: Any) -> None:
        self.commits += 1


def test_a_register_is_one_transaction_that_reads_back_the_last_seq_and_the_assignment(
    db: Database,
) -> None:
    fleet, telemetry = Blocking(FleetStore(db)), Blocking(TelemetryStore(db))
    fresh = fleet.register(fleet_pb2.Register(agent_id="edge-1", backend="sim"))
    assert fresh == Registration(last_telemetry_seq=0, assignment=None)
    for seq in (1, 2, 7):
        telemetry.ingest("edge-1", fleet_pb2.TelemetryBatch(seq=seq))
    assigned = fleet.assign("edge-1", "a" * 64)

    counted = Statements(db.engine)
    again = fleet.register(fleet_pb2.Register(agent_id="edge-1", backend="sim", version="2"))

    assert again == Registration(last_telemetry_seq=7, assignment=assigned)
    # the row; on PostgreSQL the other replicas' news; the last seq; the assignment
    notify = ["NOTIFY"] if db.dialect == "postgresql" else []
    assert counted.statements == ["INSERT", *notify, "SELECT", "SELECT"]
    assert counted.commits == 1
    record = fleet.agent("edge-1")
    assert record is not None and record.connected and record.version == "2"


def test_a_register_keeps_what_it_does_not_overwrite(db: Database) -> None:
    fleet = Blocking(FleetStore(db))
    fleet.register(fleet_pb2.Register(agent_id="edge-1", backend="sim", program_sha256="b" * 64))
    first = fleet.agent("edge-1")
    fleet.heartbeat(
        "edge-1",
        fleet_pb2.Heartbeat(program_sha256="b" * 64, health="ok", shadow_sha256="c" * 64),
    )
    fleet.register(fleet_pb2.Register(agent_id="edge-1", backend="akida", labels={"site": "a"}))
    record = fleet.agent("edge-1")
    assert record is not None and first is not None
    assert record.first_seen_ms == first.first_seen_ms
    assert record.shadow_sha256 == "c" * 64
    assert (record.backend, record.labels, record.health) == ("akida", {"site": "a"}, "no-program")


def test_registers_made_at_once_share_one_transaction_each_reading_back_its_own_start(
    db: Database,
) -> None:
    """A fleet redialling at once (a replica died) costs a transaction per group of
    Registers, not per agent; each agent still gets its own last seq and assignment,
    and keeps what a Register does not overwrite."""
    fleet, telemetry = Blocking(FleetStore(db)), Blocking(TelemetryStore(db))
    for i in range(3):
        fleet.register(fleet_pb2.Register(agent_id=f"edge-{i}", backend="sim"))
    telemetry.ingest("edge-0", fleet_pb2.TelemetryBatch(seq=4))
    telemetry.ingest("edge-2", fleet_pb2.TelemetryBatch(seq=9))
    assigned = fleet.assign("edge-1", "a" * 64)
    fleet.heartbeat("edge-2", fleet_pb2.Heartbeat(health="ok", shadow_sha256="c" * 64))
    before = {i: fleet.agent(f"edge-{i}") for i in range(3)}

    async def storm() -> list[Registration]:
        store = fleet._target
        return await asyncio.gather(
            *(
                store.register(fleet_pb2.Register(agent_id=f"edge-{i}", backend="akida"))
                for i in (*range(3), 3)
            )
        )

    counted = Statements(db.engine)
    starts = asyncio.run(storm())

    assert starts == [
        Registration(4, None),
        Registration(0, assigned),
        Registration(9, None),
        Registration(0, None),  # a new agent
    ]
    notify = ["NOTIFY"] if db.dialect == "postgresql" else []  # one for the group
    assert counted.statements == ["INSERT", *notify, "SELECT", "SELECT"]
    assert counted.commits == 1
    for i in range(3):
        record, old = fleet.agent(f"edge-{i}"), before[i]
        assert record is not None and old is not None
        assert (record.backend, record.connected) == ("akida", True)
        assert (record.first_seen_ms, record.shadow_sha256) == (
            old.first_seen_ms,
            old.shadow_sha256,
        )


class HeldRegister(FleetStore):
    """A real store whose Register transaction, once committed, waits for the test."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.committed = threading.Event()
        self.release = threading.Event()

    def _register_many(self, regs: list[fleet_pb2.Register]) -> list[Registration]:
        starts = super()._register_many(regs)
        self.committed.set()
        assert self.release.wait(30), "the test never released the Register"
        return starts


def test_an_assignment_made_while_the_agent_registers_still_reaches_it(
    database_target: str | Path,
) -> None:
    store: list[HeldRegister] = []

    def held(db: Database) -> FleetStore:
        store.append(HeldRegister(db))
        return store[0]

    server = FleetServer(database_target, store_factory=held).start()
    try:
        with RawAgent(server.address, "edge-1") as agent:
            assert store[0].committed.wait(30), "the Register never reached the store"
            # the Register's transaction has read "no assignment"; this one commits after it
            record = server.fleet.assign("edge-1", "d" * 64)
            store[0].release.set()
            agent.registered()
            wait_for(
                lambda: any(m.HasField("assignment") for m in agent.received),
                "the assignment made during the Register",
            )
            kinds = [m.WhichOneof("kind") for m in agent.received]
            assert kinds[0] == "registered"
            (assignment,) = [m.assignment for m in agent.received if m.HasField("assignment")]
            assert (assignment.sha256, assignment.generation) == ("d" * 64, record.generation)
    finally:
        store[0].release.set()
        server.stop()


def test_a_pooled_postgresql_connection_that_died_is_replaced(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ping per transaction (two round trips each): one used moments ago is trusted,
    and if it died its statement fails once and the pool starts afresh; one that sat
    idle is checked first and replaced if dead."""
    db = open_database(postgres_url)
    killer = sa.create_engine(postgres_url)

    def backend() -> int:
        with db.read() as conn:
            return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    def kill(pid: int) -> None:
        with killer.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")

    try:
        db.engine.dispose()  # one pooled connection from here on
        first = backend()
        assert backend() == first  # the same connection again
        kill(first)
        with pytest.raises(sa.exc.OperationalError):
            backend()
        second = backend()
        assert second != first
        kill(second)
        monkeypatch.setattr(database_module, "PING_AFTER_IDLE_S", 0.0)  # it sat idle "long"
        assert backend() not in (first, second)
    finally:
        killer.dispose()
        db.close()


def test_the_register_statement_is_built_once(db: Database) -> None:
    """A hot path's statement built per call cost more than running it (``.excluded``
    copies every column of the table): every Register reuses one."""
    fleet = FleetStore(db)
    seen: set[int] = set()

    def statement(_conn: Any, clauseelement: Any, *_args: Any) -> None:
        if isinstance(clauseelement, sa.Insert):
            seen.add(id(clauseelement))

    sa.event.listen(db.engine, "before_execute", statement)
    for i in range(3):
        asyncio.run(fleet.register(fleet_pb2.Register(agent_id=f"edge-{i}")))
    assert len(seen) == 1
