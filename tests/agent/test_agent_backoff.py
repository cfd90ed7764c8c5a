"""Reconnect backoff: exponential, capped, jittered so a fleet does not redial in step."""

from __future__ import annotations

from spikefleet_agent.control.channel import backoff_delay


def test_delay_doubles_per_attempt_within_its_jitter_band() -> None:
    for attempt in range(6):
        step = 0.5 * 2**attempt
        delays = [backoff_delay(attempt, 0.5, 1000.0) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)


def test_delay_is_capped() -> None:
    assert all(15.0 <= backoff_delay(60, 0.5, 30.0) <= 30.0 for _ in range(200))


def test_jitter_spreads_agents_apart() -> None:
    assert len({round(backoff_delay(3, 0.5, 30.0), 6) for _ in range(50)}) > 40
