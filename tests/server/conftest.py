from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.server import running_server

from spikefleet_server.app import ServerApp


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerApp]:
    """One real server per test module (its conversion worker is slow to spawn)."""
    with running_server(tmp_path_factory.mktemp("server"), max_upload_bytes=200_000) as app:
        yield app


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
