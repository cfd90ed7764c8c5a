"""Rollout gates read telemetry as one SQL aggregate over the stored columns: the same
sums as adding up every batch, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from spikefleet.v1 import fleet_pb2
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
