"""The fleet's Prometheus metrics, in the server's own registry (so /metrics shows them)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class FleetMetrics:
    connected: Gauge
    telemetry: Counter
    heartbeats: Counter
    installs: Counter
    telemetry_queue: Gauge
    reads_held: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> FleetMetrics:
        """``registry`` None: a private one (a FleetService outside a server, as in tests)."""
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            connected=Gauge(
                "spikefleet_fleet_connected_agents",
                "Agents with an open control stream",
                registry=registry,
            ),
            telemetry=Counter(
                "spikefleet_fleet_telemetry_batches",
                "Telemetry batches stored (new ones; re-sent duplicates are not counted)",
                registry=registry,
            ),
            heartbeats=Counter(
                "spikefleet_fleet_heartbeats",
                "Heartbeats received (agents skip unchanged ones while they send telemetry)",
                registry=registry,
            ),
            installs=Counter(
                "spikefleet_fleet_install_reports",
                "Install reports from agents, by status",
                ["status"],
                registry=registry,
            ),
            telemetry_queue=Gauge(
                "spikefleet_fleet_telemetry_queue",
                "Telemetry batches received and not yet committed (ingest lag)",
                registry=registry,
            ),
            reads_held=Counter(
                "spikefleet_fleet_reads_held_seconds",
                "Seconds the open streams waited to be read while agents were "
                "registering (registrations first)",
                registry=registry,
            ),
        )
