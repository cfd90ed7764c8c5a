"""Fixtures: a real spikefleet-server on loopback and lightweight agents dialing it over gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rollout_helpers import Agents, Server
from support.server import put_programs, running_app


@pytest.fixture
def server(tmp_path: Path, database_target: str | Path) -> Iterator[Server]:
    """A real server on SQLite, then on PostgreSQL (the tests using it run on both)."""
    with running_app(tmp_path / "server", database_target) as app:
        yield Server(app.port, put_programs(app, {"old": 1, "new": 2, "bad": 3}))


@pytest.fixture
def agents() -> Iterator[Agents]:
    pool = Agents()
    yield pool
    pool.stop()
