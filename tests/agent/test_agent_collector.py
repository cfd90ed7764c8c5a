"""The telemetry collector: a period's batch describes that period only."""

from __future__ import annotations

from spikefleet.v1 import fleet_pb2
from spikefleet_agent.telemetry.collector import Collector


def snapshot(collector: Collector) -> fleet_pb2.TelemetryBatch:
    return collector.snapshot(program_sha256="a" * 64, backend="sim", inventory=[])


def test_shadow_agreement_of_a_candidate_replaced_mid_period_is_not_mixed_in() -> None:
    collector = Collector()
    collector.shadow("old", frames=10, agreements=2)
    collector.shadow("new", frames=8, agreements=8)
    collector.shadow("new", frames=2, agreements=1)
    batch = snapshot(collector)
    assert (batch.shadow_sha256, batch.shadow_frames, batch.shadow_agreements) == ("new", 10, 9)
    collector.shadow("new", frames=4, agreements=4)
    batch = snapshot(collector)  # a new period starts from zero
    assert (batch.shadow_sha256, batch.shadow_frames, batch.shadow_agreements) == ("new", 4, 4)
    assert snapshot(collector).shadow_frames == 0
