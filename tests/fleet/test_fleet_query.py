"""``spikefleet telemetry`` and ``Client.telemetry`` over a real server: stored batches
summed up per agent and per program, over a time range, as tables, JSON and a watch."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from support.server import TOKENS, put_programs, running_app

from spikefleet import Client
from spikefleet.cli.main import main
from spikefleet.v1 import fleet_pb2
from spikefleet_server.app import ServerApp
from spikefleet_server.fleet.query import PAGE, weighted_percentile

NOW_MS = int(time.time() * 1000)
HOUR_MS = 3600 * 1000


def batch(seq: int, end_ms: int, program: str, **fields: object) -> fleet_pb2.TelemetryBatch:
    values: dict[str, object] = {
        "seq": seq,
        "start_unix_ms": end_ms - 10_000,
        "end_unix_ms": end_ms,
        "program_sha256": program,
        "backend": "sim",
    }
    values.update(fields)
    return fleet_pb2.TelemetryBatch(**values)  # type: ignore[arg-type]


@pytest.fixture
def fleet(
    tmp_path: Path, database_target: str | Path
) -> Iterator[tuple[ServerApp, dict[str, str]]]:
    """Two agents, two programs; edge-a ran 'new' for the last 20 s, 'old' 2 h ago (on
    SQLite, then on PostgreSQL)."""
    before = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(io.StringIO()))
    with running_app(tmp_path / "server", database_target) as app:
        sha = put_programs(app, {"old": 1, "new": 2})
        for agent in ("edge-a", "edge-b"):
            app.fleet.store.register(fleet_pb2.Register(agent_id=agent, program_sha256=sha["new"]))
        store = app.fleet.telemetry
        rates = {"conv1": 0.2, "conv2": 0.1}
        store.ingest("edge-a", batch(1, NOW_MS - 2 * HOUR_MS, sha["old"], frames=500))
        store.ingest(
            "edge-a",
            batch(
                2, NOW_MS - 10_000, sha["new"], frames=100, predictions=100, errors=1,
                error_kinds={"invalid-argument": 1}, latency_p50_ms=1.0, latency_p99_ms=4.0,
                class_histogram=[60, 40], spike_rates=rates, shadow_frames=100,
                shadow_agreements=90,
            ),
        )  # fmt: skip
        store.ingest(
            "edge-a",
            batch(
                3, NOW_MS, sha["new"], frames=300, predictions=300, latency_p50_ms=2.0,
                latency_p99_ms=8.0, class_histogram=[0, 100, 200],
                spike_rates={"conv1": 0.6, "conv2": 0.1},
            ),
        )  # fmt: skip
        store.ingest("edge-b", batch(1, NOW_MS, sha["new"], frames=50, latency_p99_ms=1.0))
        yield app, sha
    structlog.configure(**before)


def test_the_library_sums_periods_per_agent_and_per_program(
    fleet: tuple[ServerApp, dict[str, str]],
) -> None:
    app, sha = fleet
    with Client(f"127.0.0.1:{app.port}", token=TOKENS["viewer"]) as client:
        summary = client.telemetry(since="1h", agents=["edge-a"])
        (agent,) = summary.agents
        assert agent.key == "edge-a" and agent.related == [sha["new"]]
        assert (agent.batches, agent.frames, agent.errors) == (2, 400, 1)
        assert agent.error_kinds == {"invalid-argument": 1}
        assert agent.frames_per_s == pytest.approx(400 / 20)  # 2 periods of 10 s
        assert agent.class_histogram == [60, 140, 200]
        assert agent.spike_rates == pytest.approx({"conv1": 0.5, "conv2": 0.1})  # frame-weighted
        assert (agent.latency_p50_ms, agent.latency_p99_ms) == (2.0, 8.0)
        assert agent.shadow_agreement == pytest.approx(0.9)

        everything = client.telemetry(since=0, programs=["old"])
        assert [p.key for p in everything.programs] == [sha["old"]]
        assert everything.programs[0].frames == 500
        new = client.telemetry(since="1h", programs=["new@1"]).programs[0]
        assert new.related == ["edge-a", "edge-b"] and new.frames == 450


def test_the_cli_shows_both_tables_at_80_columns_and_json(
    fleet: tuple[ServerApp, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, _ = fleet
    monkeypatch.setenv("COLUMNS", "80")
    base = ["--server", f"127.0.0.1:{app.port}", "--token", TOKENS["viewer"], "telemetry"]
    assert main([*base, "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert "per agent" in out and "per program" in out
    assert "edge-a" in out and "edge-b" in out and "new@1" in out
    assert "old@1" not in out  # it ran 2 h ago
    assert "0:60 1:140 2:200" in out and "conv1=0.5" in out
    assert max(len(line) for line in out.splitlines()) <= 80

    assert main([*base, "--since", "all", "--agent", "edge-a", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [a["frames"] for a in data["agents"]] == [900]
    assert data["agents"][0]["error_kinds"] == {"invalid-argument": 1}
    assert {p["program"] for p in data["programs"]} == {"old@1", "new@1"}

    assert main([*base, "--watch", "--interval", "10ms", "--count", "2", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(json.loads(line)["agents"] for line in lines)

    assert main([*base, "--since", "yesterday-ish"]) == 1
    assert "is not a duration ago" in capsys.readouterr().err
    assert main([*base, "--since", "1m", "--until", "2h"]) == 1
    assert "since" in capsys.readouterr().err


def test_percentiles_are_weighted_by_frames() -> None:
    assert weighted_percentile([(1.0, 98), (50.0, 2)], 0.99) == 50.0
    assert weighted_percentile([(1.0, 98), (50.0, 2)], 0.50) == 1.0
    assert weighted_percentile([], 0.5) == 0.0


def test_a_summary_pages_through_every_batch(fleet: tuple[ServerApp, dict[str, str]]) -> None:
    app, sha = fleet
    app.fleet.store.register(fleet_pb2.Register(agent_id="busy", program_sha256=sha["new"]))
    count = PAGE * 2 + 5
    app.fleet.telemetry.ingest_many(
        [("busy", batch(i, NOW_MS - i, sha["new"], frames=1)) for i in range(1, count + 1)]
    )
    with Client(f"127.0.0.1:{app.port}", token=TOKENS["viewer"]) as client:
        (agent,) = client.telemetry(agents=["busy"]).agents
    assert (agent.batches, agent.frames) == (count, count)


def test_the_async_client_names_things_and_reads_telemetry_like_the_sync_one(
    fleet: tuple[ServerApp, dict[str, str]],
) -> None:
    import asyncio

    from spikefleet import AsyncClient
    from spikefleet.errors import AmbiguousReferenceError

    app, sha = fleet

    async def run() -> None:
        async with AsyncClient(f"127.0.0.1:{app.port}", token=TOKENS["admin"]) as client:
            assert (await client.programs.resolve("new@1")).sha256 == sha["new"]
            assert (await client.programs.describe(sha["old"][:6])).name == "old"
            assert await client.programs.get("old") == app.registry.get_bytes(sha["old"])
            assert [a.agent_id for a in await client.agents()] == ["edge-a", "edge-b"]
            with pytest.raises(AmbiguousReferenceError):
                await client.resolve_agent("edge")
            done = await client.assign("edge-b", "old")
            assert (done.agent_id, done.sha256) == ("edge-b", sha["old"])
            summary = await client.telemetry(since="1h", agents=["edge-a"])
            assert [a.frames for a in summary.agents] == [400]

    asyncio.run(run())
