"""Group commit for calls that each want their own small transaction.

A fleet redialling after a replica died sends thousands of Registers within
seconds; one transaction each costs a commit, a round of the storage threads and
the transaction's fixed Python work every time. :class:`Grouped` runs the first
call at once and gathers the calls that arrive while it runs into the next run, so
a lone call waits for nothing and a storm costs one transaction per group.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Grouped(Generic[T, R]):
    """``await grouped(item)`` is ``(await run([item]))[0]``, with concurrent items run
    together: at most ``max_group`` per run, one run at a time, in arrival order, and
    two items of the same ``key`` never in one run (the later waits for the next, so
    per key they run one after the other). If a group fails, each of its items runs
    alone, so one item's failure is only that item's."""

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R]]],
        *,
        key: Callable[[T], Hashable],
        max_group: int,
    ) -> None:
        self._run = run
        self._key = key
        self._max_group = max_group
        self._waiting: collections.deque[tuple[T, asyncio.Future[R]]] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._drain(), name="storage-group")
        return await future

    def _next_group(self) -> list[tuple[T, asyncio.Future[R]]]:
        group: list[tuple[T, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        later: list[tuple[T, asyncio.Future[R]]] = []
        while self._waiting and len(group) < self._max_group:
            item, future = self._waiting.popleft()
            if future.done():  # its caller was cancelled before it ran: as a lone call
                continue
            key = self._key(item)
            if key in keys:
                later.append((item, future))
            else:
                keys.add(key)
                group.append((item, future))
        self._waiting.extendleft(reversed(later))
        return group

    async def _drain(self) -> None:
        group: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while group := self._next_group():
                try:
                    results = await self._run([item for item, _ in group])
                except Exception as exc:
                    if len(group) == 1:
                        _settle(group[0][1], exc)
                        continue
                    log.warning("storage.group_failed", items=len(group), error=str(exc))
                    for item, future in group:  # alone, so only the culprit fails
                        try:
                            _settle(future, (await self._run([item]))[0])
                        except Exception as alone:
                            _settle(future, alone)
                    continue
                for (_, future), result in zip(group, results, strict=True):
                    _settle(future, result)
        finally:  # cancelled (the loop is closing): nobody waits for ever
            for _, future in group:
                future.cancel()
            while self._waiting:
                self._waiting.popleft()[1].cancel()


def _settle(future: asyncio.Future[R], outcome: R | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
