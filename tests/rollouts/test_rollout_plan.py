"""Specs, plans, gates and the CLI's parsers: the rules a rollout follows, without a server."""

from __future__ import annotations

import pytest

from spikefleet.client.rollouts import parse_canary, parse_duration, parse_selector, parse_waves
from spikefleet.errors import RolloutSpecError
from spikefleet_server.rollouts.gates import bake_gates, install_gate, shadow_gates
from spikefleet_server.rollouts.model import AgentView, Gates, RolloutSpec, TelemetrySummary
from spikefleet_server.rollouts.plan import plan_phases

SHA = "ab" * 32


def agents(n: int, offline: frozenset[int] = frozenset()) -> list[AgentView]:
    return [
        AgentView(f"a{i:02d}", {"site": "lab"}, connected=i not in offline, health="ok")
        for i in range(n)
    ]


def test_canary_percentage_rounds_up_and_waves_are_cumulative() -> None:
    spec = RolloutSpec(SHA, canary_percent=10, waves=(50.0, 100.0))
    phases, canary = plan_phases(spec, agents(12))
    assert canary
    assert [len(p) for p in phases] == [2, 4, 6]
    assert sorted(a for phase in phases for a in phase) == [f"a{i:02d}" for i in range(12)]


def test_connected_agents_go_first_so_the_canary_sees_traffic() -> None:
    phases, _ = plan_phases(RolloutSpec(SHA, canary_count=2), agents(5, offline=frozenset({0, 1})))
    assert phases[0] == ["a02", "a03"]
    assert phases[-1][-2:] == ["a00", "a01"]


def test_waves_that_would_be_empty_are_dropped() -> None:
    phases, canary = plan_phases(
        RolloutSpec(SHA, canary_count=1, waves=(10.0, 20.0, 100.0)), agents(2)
    )
    assert canary and phases == [["a00"], ["a01"]]


def test_no_canary_means_the_first_wave_starts_right_away() -> None:
    phases, canary = plan_phases(RolloutSpec(SHA, waves=(100.0,)), agents(3))
    assert not canary and phases == [["a00", "a01", "a02"]]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (RolloutSpec("abc"), "is not a sha256"),
        (RolloutSpec(SHA, canary_count=2, canary_percent=5), "not both"),
        (RolloutSpec(SHA, waves=(50.0,)), "must be 100%"),
        (RolloutSpec(SHA, waves=(60.0, 40.0, 100.0)), "must increase strictly"),
        (RolloutSpec(SHA, bake_s=-1), "bake time"),
        (RolloutSpec(SHA, gates=Gates(min_agreement=1.5)), "min agreement"),
        (RolloutSpec(SHA, gates=Gates(max_error_rate=2)), "max error rate"),
    ],
)
def test_invalid_specs_are_refused_naming_the_problem(spec: RolloutSpec, message: str) -> None:
    with pytest.raises(RolloutSpecError, match=message):
        spec.validate()


def test_an_agreement_gate_needs_a_canary() -> None:
    with pytest.raises(RolloutSpecError, match="give a canary"):
        plan_phases(RolloutSpec(SHA, gates=Gates(min_agreement=0.9)), agents(3))


def test_no_matching_agent_is_an_error() -> None:
    with pytest.raises(RolloutSpecError, match="no agent matches"):
        plan_phases(RolloutSpec(SHA, selector={"site": "mars"}), [])


def test_agreement_gate() -> None:
    gates = Gates(min_agreement=0.95, min_shadow_frames=100)
    (passed,) = shadow_gates(gates, TelemetrySummary(shadow_frames=200, shadow_agreements=196))
    assert passed.passed and passed.value == pytest.approx(0.98)
    (failed,) = shadow_gates(gates, TelemetrySummary(shadow_frames=200, shadow_agreements=180))
    assert not failed.passed and "180/200" in failed.detail
    (starved,) = shadow_gates(gates, TelemetrySummary(shadow_frames=50, shadow_agreements=50))
    assert not starved.passed and "only 50 shadow frames" in starved.detail
    assert shadow_gates(Gates(), TelemetrySummary()) == []


def test_error_rate_and_latency_gates() -> None:
    gates = Gates(max_error_rate=0.01, max_p99_ms=5)
    ok = bake_gates(gates, TelemetrySummary(frames=1000, errors=5, p99_ms=4.0, batches=3))
    assert [g.passed for g in ok] == [True, True]
    bad = bake_gates(gates, TelemetrySummary(frames=100, errors=10, p99_ms=9.0, batches=3))
    assert [(g.name, g.passed) for g in bad] == [("error-rate", False), ("p99-latency", False)]
    assert bake_gates(Gates(), TelemetrySummary(frames=10, errors=10)) == []
    assert install_gate(1, 0).passed is False and install_gate(1, 1).passed is True


def test_cli_parsers() -> None:
    assert parse_selector(["site=lab,tier=edge", "zone = b"]) == {
        "site": "lab",
        "tier": "edge",
        "zone": "b",
    }
    assert parse_canary("3") == (3, 0.0) and parse_canary("12.5%") == (0, 12.5)
    assert parse_waves("25%, 50%,100") == (25.0, 50.0, 100.0)
    assert [parse_duration(t) for t in ("30s", "2m", "1h", "250ms", "7")] == [
        30.0,
        120.0,
        3600.0,
        0.25,
        7.0,
    ]
    for bad, call in (("0%", parse_canary), ("-1", parse_canary), ("x", parse_waves)):
        with pytest.raises(RolloutSpecError):
            call(bad)  # type: ignore[operator]
