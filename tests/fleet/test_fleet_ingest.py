"""Telemetry ingest: acks only after commit, exactly once, in order per agent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from spikefleet.v1 import fleet_pb2
from spikefleet_server.fleet.ingest import TelemetryWriter
from spikefleet_server.storage import open_database
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
