from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from server_helpers import running_server

from spikefleet_server.app import ServerApp


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerApp]:
    with running_server(tmp_path_factory.mktemp("server")) as app:
        yield app
