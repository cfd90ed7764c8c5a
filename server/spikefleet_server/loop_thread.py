"""An asyncio event loop on its own thread, for a synchronous program that serves grpc.aio.

The server's public API (``ServerApp.start/stop``, the fleet's ``assign``) is
called from plain threads; the gRPC server and the agents' Connect streams
live on this loop; ``run`` hands a coroutine over and waits for its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "aio") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (not from the loop's own thread)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.run called from the loop thread: await instead")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop (cancelling what still runs on it) and join the thread."""
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed since the check
                self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
