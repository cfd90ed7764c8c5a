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
    """A storm is at least ``registrations`` Registers within ``window_s``."""

    registrations: int = 10
    window_s: float = 0.25
    max_hold_s: float = 10.0
    min_open_s: float = 1.0

    def __post_init__(self) -> None:
        if self.registrations < 1 or self.window_s <= 0:
            raise ValueError("a storm needs registrations >= 1 within window_s > 0")
        if self.max_hold_s <= 0 or self.min_open_s < 0:
            raise ValueError("max_hold_s must be > 0 and min_open_s >= 0")


DEFAULT_POLICY = StormPolicy()


class StormGate:
    """Whether reads are held, given when each Register arrived. Each call returns the
    time of the next :meth:`check` it needs (None: nothing to do until a Register)."""

    def __init__(self, policy: StormPolicy) -> None:
        self.policy = policy
        self._arrivals: collections.deque[float] = collections.deque()
        self.held_since: float | None = None
        self._open_until = float("-inf")  # after a maximal hold, reads run until then
        self.registrations_held = 0  # during the current hold

    @property
    def held(self) -> bool:
        return self.held_since is not None

    def register(self, now: float) -> float | None:
        """A Register arrived at ``now``."""
        self._arrivals.append(now)
        if self.held_since is not None:
            self.registrations_held += 1
        return self.check(now)

    def check(self, now: float) -> float | None:
        policy = self.policy
        arrivals = self._arrivals
        while arrivals and arrivals[0] <= now - policy.window_s:
            arrivals.popleft()
        storm = len(arrivals) >= policy.registrations
        if self.held_since is None:
            if not storm or now < self._open_until:
                return None
            self.held_since, self.registrations_held = now, 0
        elif not storm:
            self.held_since = None
            return None
        elif now - self.held_since >= policy.max_hold_s:
            self.held_since = None
            self._open_until = now + policy.min_open_s
            return None
        # still a storm: look again when it would end without another Register, or at
        # the longest hold
        calm_at = arrivals[-policy.registrations] + policy.window_s
        return min(calm_at, self.held_since + policy.max_hold_s)


class RegistrationsFirst:
    """The gate on the server's loop: Connect calls :meth:`registering` for each Register
    it takes, a stream's reader awaits :meth:`ready` before each read. ``on_held(s)``
    is told how long each hold lasted."""

    def __init__(
        self,
        policy: StormPolicy | None = None,
        *,
        on_held: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gate = StormGate(policy or StormPolicy())
        self._on_held = on_held
        self._clock = clock
        self._open = asyncio.Event()
        self._open.set()
        self._timer: asyncio.TimerHandle | None = None
        self._started = 0.0
        self.holds: list[tuple[float, float]] = []  # (start, end) of the last holds
        self.held_s = 0.0

    def registering(self) -> None:
        self._apply(self.gate.register(self._clock()))

    async def ready(self) -> None:
        if not self._open.is_set():
            await self._open.wait()

    def close(self) -> None:
        """Stop holding (the server is stopping: readers must not wait for it)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._open.set()

    def _check(self) -> None:
        self._timer = None
        self._apply(self.gate.check(self._clock()))

    def _apply(self, next_check: float | None) -> None:
        gate = self.gate
        if gate.held_since is not None and self._open.is_set():
            self._open.clear()
            self._started = gate.held_since
        elif gate.held_since is None and not self._open.is_set():
            self._open.set()
            self._ended(self._clock())
        if next_check is not None and self._timer is None:
            delay = max(0.0, next_check - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._check)

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
