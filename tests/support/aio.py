"""An asyncio event loop on a thread of its own, for synchronous tests that drive
async server code (the server itself runs under ``asyncio.run``)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
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

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 120) -> T:
        """Run ``coro`` on the loop and wait for its result (not from the loop's thread)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.run called from the loop thread: await instead")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop (cancelling what still runs on it) and join the thread."""
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed since the check
                self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


_PLAIN = (str, bytes, int, float, bool, list, dict, tuple, set, frozenset, type(None))


class Blocking:
    """``target`` for synchronous test code: its coroutine methods are run to their
    result with ``run`` (``asyncio.run``, or a server loop's ``LoopThread.run``), other
    attributes pass through (objects wrapped the same way), and assignments reach it."""

    def __init__(self, target: Any, run: Any = asyncio.run) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_run", run)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if isinstance(value, _PLAIN):
            return value
        if callable(value):

            def call(*args: Any, **kwargs: Any) -> Any:
                result = value(*args, **kwargs)
                return self._run(result) if asyncio.iscoroutine(result) else result

            return call
        return Blocking(value, self._run) if _has_coroutines(type(value)) else value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)


def _has_coroutines(kind: type) -> bool:
    """Whether instances of ``kind`` have async methods (a store, a service)."""
    return any(inspect.iscoroutinefunction(getattr(kind, name, None)) for name in dir(kind))
