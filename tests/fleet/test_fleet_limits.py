"""What the server refuses on a control stream, checked without a server: every place a
message can hold a number the database cannot store is found and named, whatever the
shortcut that spares ordinary batches the field-by-field walk."""

from __future__ import annotations

import pytest

from spikefleet.v1 import fleet_pb2
from spikefleet_server.fleet.limits import (
    INT64_MAX,
    TelemetryLimits,
    install_problem,
    register_problem,
    telemetry_problem,
)

LIMITS = TelemetryLimits()
SHA = "0" * 64


def ordinary(**fields: object) -> fleet_pb2.TelemetryBatch:
    batch = fleet_pb2.TelemetryBatch(
        seq=7,
        start_unix_ms=1,
        end_unix_ms=5001,
        program_sha256=SHA,
        backend="sim",
        frames=INT64_MAX,
        predictions=100,
        latency_p50_ms=0.5,
        latency_p99_ms=1.0,
        spike_rates={"conv1": 0.25},
        class_histogram=[1, 2, INT64_MAX],
        error_kinds={"invalid-argument": 3},
        stream_overrides={"width": 1},
        inventory=[fleet_pb2.Device(kind="akida-usb", vendor_id=2**32 - 1)],
        power=[fleet_pb2.DevicePower(unix_ms=1, voltage_mv=900.0, power_mw=1e308)],
    )
    for name, value in fields.items():
        field = getattr(batch, name)
        if isinstance(value, dict):
            field.update(value)
        elif isinstance(value, list):
            field.extend(value)
        else:
            setattr(batch, name, value)
    return batch


def test_an_ordinary_batch_at_the_edges_of_what_is_storable_passes() -> None:
    assert telemetry_problem(ordinary(), LIMITS) is None


def test_finite_values_whose_sum_overflows_are_not_refused() -> None:
    batch = ordinary(latency_p95_ms=1e308, latency_p99_ms=1e308, spike_rates={"fc": 1e308})
    assert telemetry_problem(batch, LIMITS) is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"seq": 2**64 - 1}, "TelemetryBatch.seq = 18446744073709551615"),
        ({"spool_dropped": INT64_MAX + 1}, "TelemetryBatch.spool_dropped = "),
        ({"class_histogram": [2**63]}, "TelemetryBatch.class_histogram[3] = "),
        ({"error_kinds": {"x": 2**63}}, "TelemetryBatch.error_kinds['x'] = "),
        ({"stream_overrides": {"k": 2**64 - 1}}, "TelemetryBatch.stream_overrides['k'] = "),
        ({"latency_p95_ms": float("inf")}, "TelemetryBatch.latency_p95_ms = inf"),
        ({"spike_rates": {"fc": float("nan")}}, "TelemetryBatch.spike_rates['fc'] = nan"),
        (
            {"power": [fleet_pb2.DevicePower(current_ma=float("-inf"))]},
            "TelemetryBatch.power[1].current_ma = -inf",
        ),
    ],
)
def test_a_number_the_database_cannot_store_is_named_wherever_it_is(
    fields: dict[str, object], named: str
) -> None:
    problem = telemetry_problem(ordinary(**fields), LIMITS)
    assert problem is not None and problem.startswith(named), problem


def test_register_and_install_report_are_checked_the_same_way() -> None:
    register = fleet_pb2.Register(agent_id="edge-1", program_sha256=SHA)
    assert register_problem(register) is None
    report = fleet_pb2.InstallReport(sha256=SHA, status=fleet_pb2.InstallReport.INSTALLED)
    assert install_problem(report) is None


def test_the_size_a_caller_measured_is_the_one_judged() -> None:
    batch = ordinary()
    limits = TelemetryLimits(max_batch_bytes=batch.ByteSize())
    assert telemetry_problem(batch, limits) is None
    problem = telemetry_problem(batch, limits, size=batch.ByteSize() + 1)
    assert problem is not None and "more than telemetry_max_batch_bytes" in problem
