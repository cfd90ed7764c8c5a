"""Telemetry is selected and summed in SQL wherever the stored columns allow: the gates'
totals are one aggregate, the summary's batches are selected by range, agent and
program; the same as reading every batch, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from spikefleet.v1 import fleet_pb2
from spikefleet_server.fleet.store import FleetStore
from spikefleet_server.storage import open_database
from spikefleet_server.telemetry import IN_CHUNK, TelemetryStore, TelemetryTotals

OLD, NEW, SHADOW, OTHER = "0" * 64, "1" * 64, "2" * 64, "3" * 64


def batches() -> list[tuple[str, fleet_pb2.TelemetryBatch]]:
    made = []
    for i in range(60):
        made.append(
            (
                f"edge-{i % 4}",
                fleet_pb2.TelemetryBatch(
                    seq=i // 4 + 1,
                    program_sha256=NEW if i % 3 else OLD,
                    shadow_sha256=SHADOW if i % 2 else OTHER,
                    frames=100 + i,
                    errors=i % 5,
                    latency_p99_ms=1.0 + i / 10,
                    shadow_frames=10 + i,
                    shadow_agreements=9 + i,
                ),
            )
        )
    return made


def added_up(
    items: list[tuple[str, fleet_pb2.TelemetryBatch]],
    agents: set[str],
    program: str = "",
    shadow: str = "",
) -> TelemetryTotals:
    """What the gates were given when every batch was read and summed in Python."""
    chosen = [b for a, b in items if a in agents and (not program or b.program_sha256 == program)]
    shadowed = [b for b in chosen if not shadow or b.shadow_sha256 == shadow]
    return TelemetryTotals(
        frames=sum(b.frames for b in chosen),
        errors=sum(b.errors for b in chosen),
        p99_ms=max((b.latency_p99_ms for b in chosen), default=0.0),
        shadow_frames=sum(b.shadow_frames for b in shadowed),
        shadow_agreements=sum(b.shadow_agreements for b in shadowed),
        batches=len(chosen),
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TelemetryStore:
    if request.param == "sqlite":
        db = open_database(tmp_path / "server.db")
    else:
        db = open_database(request.getfixturevalue("postgres_url"))
    request.addfinalizer(db.close)
    return TelemetryStore(db)


def test_gate_totals_are_the_sums_of_the_batches(store: TelemetryStore) -> None:
    items = batches()
    asyncio.run(store.ingest_many(items))
    some = {"edge-1", "edge-2"}
    # edge-0 sorts first and edge-3 last among these: they land in different IN lists
    many = ["edge-0", *(f"edge-1-{i:05d}" for i in range(IN_CHUNK)), "edge-3"]
    cases = [
        (sorted(some), {}, added_up(items, some)),
        (sorted(some), {"program_sha256": NEW}, added_up(items, some, NEW)),
        (
            sorted(some),
            {"program_sha256": NEW, "shadow_sha256": SHADOW},
            added_up(items, some, NEW, SHADOW),
        ),
        (many, {"shadow_sha256": SHADOW}, added_up(items, set(many), shadow=SHADOW)),
        (["edge-9"], {}, TelemetryTotals()),
    ]
    for agent_ids, options, expected in cases:
        got = asyncio.run(store.totals(agent_ids, 0, **options))
        assert got == expected, options
    assert asyncio.run(store.totals(sorted(some), 2**62)) == TelemetryTotals()


def test_summary_batches_are_selected_by_range_agent_and_program_page_by_page(
    store: TelemetryStore,
) -> None:
    items = [
        (agent, fleet_pb2.TelemetryBatch(seq=seq, end_unix_ms=seq * 100, program_sha256=sha))
        for agent in ("edge-a", "edge-b", "ghost")
        for seq, sha in zip(range(1, 31), [OLD, NEW] * 15, strict=True)
    ]
    asyncio.run(store.ingest_many(items))
    fleet = FleetStore(store.db)
    for agent in ("edge-a", "edge-b"):  # ghost never registered: its rows are not summed
        asyncio.run(fleet.register(fleet_pb2.Register(agent_id=agent)))

    def selected(**options: object) -> list[tuple[str, int]]:
        keys: list[tuple[str, int]] = []
        after = None
        while True:
            page = asyncio.run(store.ended_within(500, 2_000, after=after, limit=7, **options))
            keys += [(r.agent_id, r.seq) for r in page]
            if len(page) < 7:
                return keys
            after = keys[-1]

    in_range = [(a, b.seq) for a, b in items if a != "ghost" and 500 <= b.end_unix_ms <= 2_000]
    assert selected() == in_range
    assert selected(agent_ids=["edge-b"]) == [k for k in in_range if k[0] == "edge-b"]
    news = [(a, b.seq) for a, b in items if (a, b.seq) in in_range and b.program_sha256 == NEW]
    assert selected(program_sha256s=[NEW]) == news
