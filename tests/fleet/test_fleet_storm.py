"""Registrations first: while agents register in a storm, open streams wait to be read.

A survivor of a replica's death takes thousands of Registers within seconds; each
one it takes up costs passes of its event loop that the whole fleet's telemetry
would otherwise share. So the open streams' next reads wait while Registers come
faster than a storm's rate, never longer than the policy's longest hold, and what
waited is read afterwards, once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fleet_helpers import FleetServer
from support.raw_agent import RawAgent

from spikefleet_server.fleet.storm import StormGate, StormPolicy

POLICY = StormPolicy(registrations=3, window_s=1.0, max_hold_s=5.0, min_open_s=2.0)


def test_a_trickle_of_registers_never_holds_reads() -> None:
    gate = StormGate(POLICY)
    for second in range(20):
        assert gate.register(float(second)) is None
        assert gate.register(second + 0.5) is None  # two a second, the storm is three
        assert not gate.held


def test_a_storm_holds_reads_until_registers_slow_down() -> None:
    gate = StormGate(POLICY)
    gate.register(0.0)
    gate.register(0.1)
    assert not gate.held
    next_check = gate.register(0.2)
    assert gate.held and gate.held_since == 0.2
    assert next_check == pytest.approx(1.0)  # the first of the three leaves the window
    assert gate.register(0.9) == pytest.approx(1.1)  # a fourth: calm only when 0.1 leaves
    assert gate.check(1.05) == pytest.approx(1.1)
    assert gate.held
    assert gate.check(1.1) is None  # two in the window: no longer a storm
    assert not gate.held
    assert gate.registrations_held == 1  # the fourth arrived during the hold


def test_an_endless_storm_lets_reads_run_after_the_longest_hold() -> None:
    gate = StormGate(POLICY)
    t, checks = 0.0, []
    while t < 5.0:  # ten Registers a second, for ever
        checks.append(gate.register(t))
        t = round(t + 0.1, 3)
    assert gate.held and gate.held_since == pytest.approx(0.2)
    assert max(c for c in checks if c is not None) <= 0.2 + POLICY.max_hold_s
    assert gate.check(5.2) is None  # held 5 s: reads run now
    assert not gate.held
    t = 5.3
    while t < 7.2:  # for at least min_open_s, however many Registers come
        assert gate.register(t) is None and not gate.held
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
