"""Registrations first: while agents register in a storm, open streams wait to be read.

A survivor of a replica's death takes thousands of Registers within seconds; each
one it takes up costs passes of its event loop that the whole fleet's telemetry
would otherwise share. So the open streams' next reads wait while Registers come
faster than a storm's rate, never longer than the policy's longest hold, and what
waited is read afterwards, once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest
from fleet_helpers import FleetServer
from support.raw_agent import RawAgent

from spikefleet_server.fleet.storm import RegistrationsFirst, StormGate, StormPolicy

POLICY = StormPolicy(registrations=3, window_s=1.0, max_hold_s=5.0, min_open_s=2.0)


def test_a_trickle_of_registers_never_holds_reads() -> None:
    gate = StormGate(POLICY)
    for second in range(20):
        for t in (float(second), second + 0.5):  # two a second, the storm is three
            assert gate.register(t) is None
            assert gate.registered(t + 0.05) is None
            assert not gate.held


def test_a_storm_holds_reads_until_registers_are_calm_and_none_is_in_progress() -> None:
    gate = StormGate(POLICY)
    gate.register(0.0)
    gate.register(0.1)
    assert not gate.held
    gate.register(0.2)
    assert gate.held and gate.held_since == 0.2
    for _ in range(3):
        gate.registered(0.3)  # all done, but a Register came within the window
    assert gate.held
    assert gate.check(0.3) == pytest.approx(1.2)  # calm once 0.2 is a window old
    gate.register(0.9)  # one more, waiting on the database for a long time
    assert gate.registrations_held == 1
    assert gate.check(1.95) == pytest.approx(0.2 + POLICY.max_hold_s)  # in progress: held
    assert gate.held
    assert gate.registered(2.0) is None  # done, and calm since 1.9
    assert not gate.held


def test_a_registration_in_progress_keeps_the_hold_across_a_lull() -> None:
    gate = StormGate(POLICY)
    for t in (0.0, 0.1, 0.2):
        gate.register(t)
    gate.registered(0.25)
    gate.registered(0.25)
    assert gate.check(3.0) == pytest.approx(0.2 + POLICY.max_hold_s)  # one still in progress
    assert gate.held
    assert gate.registered(3.1) is None
    assert not gate.held


def test_an_endless_storm_lets_reads_run_after_the_longest_hold() -> None:
    gate = StormGate(POLICY)
    t, checks = 0.0, []
    while t < 5.0:  # ten Registers a second, each done at once, for ever
        checks.append(gate.register(t))
        checks.append(gate.registered(t))
        t = round(t + 0.1, 3)
    assert gate.held and gate.held_since == pytest.approx(0.2)
    assert max(c for c in checks if c is not None) <= 0.2 + POLICY.max_hold_s
    assert gate.check(5.2) is None  # held 5 s: reads run now
    assert not gate.held
    t = 5.3
    while t < 7.2:  # for at least min_open_s, however many Registers come
        assert gate.register(t) is None and not gate.held
        gate.registered(t)
        t = round(t + 0.1, 3)
    gate.register(7.3)
    assert gate.held  # then the storm holds them again


def test_policy_bounds_are_checked() -> None:
    for bad in (
        {"registrations": 0},
        {"window_s": 0.0},
        {"max_hold_s": 0.0},
        {"min_open_s": -1.0},
    ):
        with pytest.raises(ValueError, match=r"storm|max_hold_s"):
            StormPolicy(**bad)  # type: ignore[arg-type]


def test_a_storm_holds_the_open_streams_reads_not_the_registers(
    database_target: str | Path,
) -> None:
    # two Registers make a storm; it ends by the longest hold, then reads stay open
    policy = StormPolicy(registrations=2, window_s=60.0, max_hold_s=0.5, min_open_s=60.0)
    server = FleetServer(database_target, storm=policy).start()
    try:
        gate = server.service.registrations_first  # type: ignore[union-attr]
        assert gate is not None
        with RawAgent(server.address, "edge-open") as agent:
            agent.registered()
            agent.telemetry(seq=1)
            agent.wait_acks(1)
            with RawAgent(server.address, "edge-new") as newcomer:
                newcomer.registered()  # a Register is not held
                assert gate.gate.held
                # the stream's reader was already waiting for seq 2; seq 3 waits its turn
                agent.telemetry(seq=2)
                agent.telemetry(seq=3)
                seen_while_held = []
                while gate.gate.held:
                    acks = [ack.seq for ack in agent.acks()]
                    if gate.gate.held:  # so these acks came while the reads were held
                        seen_while_held.append(acks)
                    time.sleep(0.01)
                assert seen_while_held and all(3 not in acks for acks in seen_while_held)
                assert [ack.seq for ack in agent.wait_acks(3)] == [1, 2, 3]
                assert [ack.refused for ack in agent.acks()] == ["", "", ""]
        assert len(gate.holds) == 1 and gate.held_s >= policy.max_hold_s
        counted = server.service.metrics.reads_held.collect()[0].samples  # type: ignore[union-attr]
        assert [s.value for s in counted if s.name.endswith("_total")] == [gate.held_s]
    finally:
        server.stop()


def test_reads_are_paced_a_pass_of_the_loop_at_a_time() -> None:
    asyncio.run(_ten_streams_reading_twice(RegistrationsFirst(StormPolicy(reads_per_pass=3))))


async def _ten_streams_reading_twice(gate: RegistrationsFirst) -> None:
    passes: list[int] = []
    started: list[int] = []

    async def reader(index: int) -> None:
        for _ in range(2):
            await gate.ready()
            started.append(index)

    async def count_passes() -> None:
        while len(started) < 20:
            passes.append(len(started))
            await asyncio.sleep(0)

    await asyncio.gather(count_passes(), *(reader(i) for i in range(10)))
    per_pass = [b - a for a, b in itertools.pairwise([*passes, len(started)])]
    assert sorted(started) == sorted(list(range(10)) * 2)  # every read ran
    assert max(per_pass) <= 3 and sum(per_pass) == 20
