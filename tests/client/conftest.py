from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.server import running_server

from spikefleet_server.app import ServerApp


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerApp]:
    with running_server(tmp_path_factory.mktemp("server")) as app:
        yield app
