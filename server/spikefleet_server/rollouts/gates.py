"""Health gates: turn telemetry over a bake into pass/fail verdicts with reasons."""

from __future__ import annotations

from spikefleet_server.rollouts.model import GateResult, Gates, TelemetrySummary


def shadow_gates(gates: Gates, telemetry: TelemetrySummary) -> list[GateResult]:
    """The agreement gate, checked on the canary while the candidate runs in shadow."""
    if gates.min_agreement <= 0:
        return []
    frames = telemetry.shadow_frames
    needed = max(1, gates.min_shadow_frames)
    if frames < needed:
        return [
            GateResult(
                "agreement",
                False,
                0.0,
                gates.min_agreement,
                f"only {frames} shadow frames on the canary (need {needed}):"
                " the canary agents saw too little live input to judge the candidate",
            )
        ]
    agreement = telemetry.shadow_agreements / frames
    return [
        GateResult(
            "agreement",
            agreement >= gates.min_agreement,
            agreement,
            gates.min_agreement,
            f"{telemetry.shadow_agreements}/{frames} shadow frames agreed on the top-1 class",
        )
    ]


def bake_gates(gates: Gates, telemetry: TelemetrySummary) -> list[GateResult]:
    """Error rate and p99 latency of the agents running the candidate."""
    results: list[GateResult] = []
    if gates.max_error_rate > 0:
        requests = telemetry.frames + telemetry.errors
        rate = telemetry.errors / requests if requests else 0.0
        results.append(
            GateResult(
                "error-rate",
                rate <= gates.max_error_rate,
                rate,
                gates.max_error_rate,
                f"{telemetry.errors} errors, {telemetry.frames} frames",
            )
        )
    if gates.max_p99_ms > 0:
        results.append(
            GateResult(
                "p99-latency",
                telemetry.p99_ms <= gates.max_p99_ms,
                telemetry.p99_ms,
                gates.max_p99_ms,
                f"worst p99 over {telemetry.batches} telemetry batches",
            )
        )
    return results


def install_gate(failed: int, allowed: int) -> GateResult:
    return GateResult(
        "installs",
        failed <= allowed,
        float(failed),
        float(allowed),
        f"{failed} failed installs, {allowed} allowed",
    )
