"""Registrations first: while a fleet redials, the streams already open wait to be read.

When a replica dies, its agents all redial the survivors within seconds. A
grpc.aio server takes a new call up only between passes of its event loop, a few
passes per call, and while every open stream is being read each pass also carries
the whole fleet's telemetry: on a 2-core machine 2,500 agents redialling a
survivor that holds 2,500 more came back at about 100 a second. Telemetry can
wait (agents spool it until it is acked and send it again after a reconnect); an
agent without a stream gets no assignment. So while Registers arrive faster than
a storm's rate, the open streams' next reads wait; they resume when Registers slow
down, or after ``max_hold_s`` at a stretch, and then run for at least
``min_open_s`` (telemetry is delayed, never starved).

Reads are also paced: at most ``reads_per_pass`` streams start their next read in
one pass of the loop, the rest wait for the next passes. A fleet in steady state
never meets that bound; a fleet released from a hold (thousands of streams with a
backlog each) would otherwise fill single passes with thousands of reads, and a
call waiting to be taken up needs several passes: the measured stall took the
last 150 of 5,000 agents up at 4 a second.

:class:`StormGate` is the decision, a pure function of the times it is given;
:class:`RegistrationsFirst` runs it on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StormPolicy:
    """A storm is at least ``registrations`` Registers within ``window_s``; it is over
    once none arrived for ``window_s`` and none is in progress."""

    registrations: int = 10
    window_s: float = 0.25
    max_hold_s: float = 10.0
    min_open_s: float = 1.0
    reads_per_pass: int = 50

    def __post_init__(self) -> None:
        if self.reads_per_pass < 1:
            raise ValueError("reads_per_pass must be >= 1")
        if self.registrations < 1 or self.window_s <= 0:
            raise ValueError("a storm needs registrations >= 1 within window_s > 0")
        if self.max_hold_s <= 0 or self.min_open_s < 0:
            raise ValueError("max_hold_s must be > 0 and min_open_s >= 0")


DEFAULT_POLICY = StormPolicy()


class StormGate:
    """Whether reads are held, given when each Register arrived and when its registration
    (the group transaction, Registered sent) was done. Each call returns the time of
    the next :meth:`check` it needs (None: nothing to do until the next Register).

    A hold starts at a storm's rate and lasts while any registration is in progress or
    a Register arrived within ``window_s``: registrations waiting on the database, or
    a lull between gRPC's accept rounds, must not let the whole fleet's reads in."""

    def __init__(self, policy: StormPolicy) -> None:
        self.policy = policy
        self._arrivals: collections.deque[float] = collections.deque()
        self.in_progress = 0
        self.held_since: float | None = None
        self._open_until = float("-inf")  # after a maximal hold, reads run until then
        self.registrations_held = 0  # Registers that arrived during the current hold

    @property
    def held(self) -> bool:
        return self.held_since is not None

    def register(self, now: float) -> float | None:
        """A Register arrived at ``now``; its registration is in progress."""
        self._arrivals.append(now)
        self.in_progress += 1
        if self.held_since is not None:
            self.registrations_held += 1
        return self.check(now)

    def registered(self, now: float) -> float | None:
        """A registration is done (or failed)."""
        self.in_progress = max(0, self.in_progress - 1)
        return self.check(now)

    def check(self, now: float) -> float | None:
        policy = self.policy
        arrivals = self._arrivals
        while arrivals and arrivals[0] <= now - policy.window_s:
            arrivals.popleft()
        if self.held_since is None:
            if len(arrivals) < policy.registrations or now < self._open_until:
                return None
            self.held_since, self.registrations_held = now, 0
        if now - self.held_since >= policy.max_hold_s:
            self.held_since = None
            self._open_until = now + policy.min_open_s
            return None
        longest = self.held_since + policy.max_hold_s
        if self.in_progress:
            return longest  # a registration's end checks again
        if not arrivals:  # calm for a window, nothing in progress: the storm is over
            self.held_since = None
            return None
        return min(arrivals[-1] + policy.window_s, longest)


class RegistrationsFirst:
    """The gate on the server's loop: Connect calls :meth:`registering` for each Register
    it takes and :meth:`registered` when that registration is done either way, a
    stream's reader awaits :meth:`ready` before each read (held, then paced).
    ``on_held(s)`` is told how long each hold lasted."""

    def __init__(
        self,
        policy: StormPolicy | None = None,
        *,
        on_held: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gate = StormGate(policy or StormPolicy())
        self._per_pass = self.gate.policy.reads_per_pass
        self._budget = self._per_pass  # reads this pass may still start
        self._queued: collections.deque[asyncio.Future[None]] = collections.deque()
        self._refill: asyncio.Handle | None = None
        self._on_held = on_held
        self._clock = clock
        self._open = asyncio.Event()
        self._open.set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")  # when it fires, on ``clock``
        self._started = 0.0
        self.holds: list[tuple[float, float]] = []  # (start, end) of the last holds
        self.held_s = 0.0

    def registering(self) -> None:
        self._apply(self.gate.register(self._clock()))

    def registered(self) -> None:
        self._apply(self.gate.registered(self._clock()))

    async def ready(self) -> None:
        if not self._open.is_set():
            await self._open.wait()
        loop = asyncio.get_running_loop()
        if self._refill is None:  # the budget comes back with the next pass
            self._refill = loop.call_soon(self._next_pass)
        if self._budget > 0 and not self._queued:
            self._budget -= 1
            return
        turn = loop.create_future()
        self._queued.append(turn)
        await turn

    def _next_pass(self) -> None:
        """A new pass of the loop: a fresh budget, spent first on the reads that wait."""
        self._refill = None
        budget, queued = self._per_pass, self._queued
        while budget and queued:
            turn = queued.popleft()
            if not turn.done():  # its reader was cancelled meanwhile
                turn.set_result(None)
                budget -= 1
        self._budget = budget
        if queued:
            self._refill = asyncio.get_running_loop().call_soon(self._next_pass)

    def close(self) -> None:
        """Stop holding (the server is stopping: readers must not wait for it)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, float("inf")
        self._open.set()

    def _check(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        self._apply(self.gate.check(self._clock()))

    def _apply(self, next_check: float | None) -> None:
        gate = self.gate
        if gate.held_since is not None and self._open.is_set():
            self._open.clear()
            self._started = gate.held_since
        elif gate.held_since is None and not self._open.is_set():
            self._open.set()
            self._ended(self._clock())
        if next_check is None or next_check >= self._timer_at:
            return  # the timer that is set comes first (a check then finds what is due)
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, next_check - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._check)
        self._timer_at = next_check

    def _ended(self, now: float) -> None:
        seconds = now - self._started
        self.held_s += seconds
        self.holds = [*self.holds[-9:], (self._started, now)]
        if self._on_held is not None:
            self._on_held(seconds)
        log.info(
            "fleet.reads_held",
            seconds=round(seconds, 3),
            registrations=self.gate.registrations_held,
            why="registrations first: agents were redialling",
        )
