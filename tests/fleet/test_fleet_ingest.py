"""Telemetry ingest: acks only after commit, exactly once, in order per agent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from spikefleet.v1 import fleet_pb2
from spikefleet_server.fleet.ingest import TelemetryWriter
from spikefleet_server.fleet.store import FleetStore
from spikefleet_server.storage import open_database
from spikefleet_server.storage.schema import fleet_agents
from spikefleet_server.telemetry import IngestResult, TelemetryStore


def test_every_batch_is_committed_before_its_ack_and_duplicates_are_not_new(
    database_target: str | Path,
) -> None:
    db = open_database(database_target)
    store = TelemetryStore(db)
    acked: list[tuple[str, int, bool, int]] = []
    total = 300

    async def ingest() -> None:
        writer = TelemetryWriter(store)
        writer.start()
        all_done = asyncio.Event()

        def done_for(agent: str, seq: int) -> Callable[[IngestResult], None]:
            def done(result: IngestResult) -> None:
                stored = store._last_seq(agent)  # already visible when the ack goes out
                acked.append((agent, seq, result.new, stored))
                if len(acked) == total:
                    all_done.set()

            return done

        for i in range(total):
            agent, seq = f"edge-{i % 3}", i // 3 + 1
            if i >= 270:  # the last 30 re-send batches the server already has
                seq = (i - 270) // 3 + 1
            writer.submit(agent, fleet_pb2.TelemetryBatch(seq=seq, frames=i), done_for(agent, seq))
        await asyncio.wait_for(all_done.wait(), 30)
        await writer.close()

    asyncio.run(ingest())
    assert all(stored >= seq for _, seq, _, stored in acked)
    assert sum(not new for _, _, new, _ in acked) == 30
    for agent in ("edge-0", "edge-1", "edge-2"):
        seqs = [r.seq for r in asyncio.run(store.of_agent(agent))]
        assert seqs == list(range(1, 91))
    db.close()


def test_a_group_commit_stores_each_batch_once_and_refuses_only_what_the_database_cannot_hold(
    database_target: str | Path,
) -> None:
    """The group goes in as one statement; a batch sent twice in it is new once, and one
    the database refuses (here a frame count past its 64-bit column; the server's
    boundary checks refuse those earlier) is refused alone, the rest stored."""
    db = open_database(database_target)
    store = TelemetryStore(db)
    try:
        first = asyncio.run(
            store.ingest_many(
                [
                    ("edge-1", fleet_pb2.TelemetryBatch(seq=1, frames=10)),
                    ("edge-2", fleet_pb2.TelemetryBatch(seq=1, frames=20)),
                    ("edge-1", fleet_pb2.TelemetryBatch(seq=1, frames=10)),  # sent twice
                    ("edge-1", fleet_pb2.TelemetryBatch(seq=2, frames=11, latency_p99_ms=2.5)),
                ]
            )
        )
        assert [r.new for r in first] == [True, True, False, True]
        second = asyncio.run(
            store.ingest_many(
                [
                    ("edge-2", fleet_pb2.TelemetryBatch(seq=2, frames=2**63)),
                    ("edge-2", fleet_pb2.TelemetryBatch(seq=3, frames=21)),
                    ("edge-1", fleet_pb2.TelemetryBatch(seq=2, frames=11)),  # stored already
                ]
            )
        )
        assert second[0].refused.startswith("not storable") and not second[0].new
        assert [(r.new, r.refused) for r in second[1:]] == [(True, ""), (False, "")]
        one = asyncio.run(store.of_agent("edge-1"))
        assert [(r.seq, r.batch.frames, r.batch.latency_p99_ms) for r in one] == [
            (1, 10, 0.0),
            (2, 11, 2.5),
        ]
        assert [(r.seq, r.batch.frames) for r in asyncio.run(store.of_agent("edge-2"))] == [
            (1, 20),
            (3, 21),
        ]
    finally:
        db.close()


def test_a_group_commit_refreshes_the_last_seen_of_its_seen_agents_only(
    database_target: str | Path,
) -> None:
    db = open_database(database_target)
    fleet, telemetry = FleetStore(db), TelemetryStore(db)
    try:
        for agent_id in ("edge-1", "edge-2", "edge-3"):
            asyncio.run(fleet.register(fleet_pb2.Register(agent_id=agent_id)))
        with db.write() as conn:  # long ago
            conn.execute(sa.update(fleet_agents).values(last_seen_ms=1))
        asyncio.run(
            telemetry.ingest_many(
                [("edge-3", fleet_pb2.TelemetryBatch(seq=1))], seen=["edge-1", "edge-2"]
            )
        )
        seen = {a.agent_id: a.last_seen_ms for a in asyncio.run(fleet.agents())}
        assert seen["edge-3"] == 1 and seen["edge-1"] > 1 and seen["edge-2"] > 1
    finally:
        db.close()
