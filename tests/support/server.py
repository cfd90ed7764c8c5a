"""A real ServerApp serving on loopback from a thread, for synchronous tests and
benchmarks; ``call`` runs one of its coroutines (``app.registry.put(...)``) on the
server's own loop."""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from spikefleet_server.app import ServerApp
from spikefleet_server.config import ServerConfig
from support.aio import LoopThread

T = TypeVar("T")


class RunningServer:
    def __init__(self, app: ServerApp, loop: LoopThread) -> None:
        self.app = app
        self.loop = loop

    @property
    def port(self) -> int:
        return self.app.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop and return its result."""
        return self.loop.run(coro)


@contextmanager
def serving(config: ServerConfig, grace: float | None = None) -> Iterator[RunningServer]:
    """Build, start, and at the end stop (``grace``: the config's drain) a ServerApp."""
    with serve_app(ServerApp(config), grace) as running:
        yield running


@contextmanager
def serve_app(app: ServerApp, grace: float | None = None) -> Iterator[RunningServer]:
    """Start an app built (and added to) in the test, on a loop thread; stop it at the end."""
    loop = LoopThread("server")
    try:
        try:
            loop.run(app.start())
        except BaseException:
            loop.run(app.stop(0))
            raise
        try:
            yield RunningServer(app, loop)
        finally:
            loop.run(app.stop(app.config.drain_seconds if grace is None else grace))
    finally:
        loop.close()
