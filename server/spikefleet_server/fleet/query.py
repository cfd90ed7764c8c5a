"""The TelemetryQuery service: stored telemetry summed up per agent and per program.

What ``spikefleet telemetry`` shows. The database selects the batches (the time
range, agents and programs are stored columns) and hands them over a page
(:data:`PAGE`) at a time, so a query holds one page and the running sums, never
the whole range; the sums are built here because half of what is summed (events,
p50, error kinds, classes, spike rates) lives only in each batch's body.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc

from spikefleet.v1 import fleet_pb2, telemetry_pb2, telemetry_pb2_grpc
from spikefleet.wire.telemetry import TelemetryStats, TelemetrySummary
from spikefleet_server.auth import Role
from spikefleet_server.storage.areas import TelemetryStorage

SERVICE_NAME = "spikefleet.v1.TelemetryQuery"
ROLES = {"Summarize": Role.VIEWER}
PAGE = 2_000
MAX_FILTERS = 10_000
"""Agent ids or sha256s one request may name: bounds the request's own size."""


@dataclass
class _Sums:
    """Running sums of one agent's or one program's periods."""

    key: str
    batches: int = 0
    frames: int = 0
    events: int = 0
    predictions: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    first_ms: int = 0
    last_ms: int = 0
    p50: list[tuple[float, int]] = field(default_factory=list)  # (value, frames) per period
    p99: list[tuple[float, int]] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    spike_sums: dict[str, float] = field(default_factory=dict)
    spike_frames: dict[str, int] = field(default_factory=dict)
    shadow_frames: int = 0
    shadow_agreements: int = 0
    related: set[str] = field(default_factory=set)
    # per agent: frames and milliseconds its periods covered, for frames/s
    covered: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, batch: fleet_pb2.TelemetryBatch, related: str, agent_id: str) -> None:
        self.batches += 1
        self.frames += batch.frames
        self.events += batch.events
        self.predictions += batch.predictions
        self.errors += batch.errors
        for kind, count in batch.error_kinds.items():
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + count
        start, end = batch.start_unix_ms, batch.end_unix_ms
        self.first_ms = start if not self.first_ms else min(self.first_ms, start)
        self.last_ms = max(self.last_ms, end)
        frames, covered_ms = self.covered.get(agent_id, (0, 0))
        self.covered[agent_id] = (frames + batch.frames, covered_ms + max(0, end - start))
        if batch.frames:
            self.p50.append((batch.latency_p50_ms, batch.frames))
            self.p99.append((batch.latency_p99_ms, batch.frames))
        if len(batch.class_histogram) > len(self.classes):
            self.classes.extend([0] * (len(batch.class_histogram) - len(self.classes)))
        for index, count in enumerate(batch.class_histogram):
            self.classes[index] += count
        for layer, rate in batch.spike_rates.items():
            self.spike_sums[layer] = self.spike_sums.get(layer, 0.0) + rate * batch.frames
            self.spike_frames[layer] = self.spike_frames.get(layer, 0) + batch.frames
        self.shadow_frames += batch.shadow_frames
        self.shadow_agreements += batch.shadow_agreements
        if related:
            self.related.add(related)

    def frames_per_s(self) -> float:
        """Each agent's frames over the time its periods covered, summed over agents:
        the rate while running, not diluted by gaps in the range."""
        return sum(frames * 1000 / ms for frames, ms in self.covered.values() if ms > 0)

    def stats(self) -> TelemetryStats:
        return TelemetryStats(
            key=self.key,
            batches=self.batches,
            frames=self.frames,
            events=self.events,
            predictions=self.predictions,
            errors=self.errors,
            error_kinds=self.error_kinds,
            first_unix_ms=self.first_ms,
            last_unix_ms=self.last_ms,
            frames_per_s=self.frames_per_s(),
            latency_p50_ms=weighted_percentile(self.p50, 0.50),
            latency_p99_ms=weighted_percentile(self.p99, 0.99),
            class_histogram=list(self.classes),
            spike_rates={
                layer: total / self.spike_frames[layer]
                for layer, total in self.spike_sums.items()
                if self.spike_frames[layer]
            },
            shadow_frames=self.shadow_frames,
            shadow_agreements=self.shadow_agreements,
            related=sorted(self.related),
        )


def weighted_percentile(values: Iterable[tuple[float, int]], q: float) -> float:
    """The value below which a fraction ``q`` of the weight lies (0 when there is none)."""
    ordered = sorted(values)
    total = sum(weight for _, weight in ordered)
    if not total:
        return 0.0
    target = q * total
    seen = 0
    for value, weight in ordered:
        seen += weight
        if seen >= target:
            return value
    return ordered[-1][0]


async def summarize(
    source: TelemetryStorage,
    request: telemetry_pb2.TelemetryQueryRequest,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> TelemetrySummary:
    """Sum up the stored periods ``request`` selects (by the time each period ended)."""
    since = request.since_unix_ms
    until = request.until_unix_ms or now_ms()
    by_agent: dict[str, _Sums] = {}
    by_program: dict[str, _Sums] = {}
    after: tuple[str, int] | None = None
    while True:
        page = await source.ended_within(
            since,
            until,
            agent_ids=request.agent_ids,
            program_sha256s=request.program_sha256s,
            after=after,
            limit=PAGE,
        )
        for record in page:
            batch, agent_id = record.batch, record.agent_id
            sha = batch.program_sha256
            by_agent.setdefault(agent_id, _Sums(agent_id)).add(batch, sha, agent_id)
            by_program.setdefault(sha, _Sums(sha)).add(batch, agent_id, agent_id)
        if len(page) < PAGE:
            break
        after = (page[-1].agent_id, page[-1].seq)
    return TelemetrySummary(
        since_unix_ms=since,
        until_unix_ms=until,
        agents=[by_agent[key].stats() for key in sorted(by_agent)],
        programs=[by_program[key].stats() for key in sorted(by_program)],
    )


class TelemetryQueryService(telemetry_pb2_grpc.TelemetryQueryServicer):
    def __init__(self, source: TelemetryStorage) -> None:
        self._source = source

    async def Summarize(
        self, request: telemetry_pb2.TelemetryQueryRequest, context: grpc.aio.ServicerContext
    ) -> telemetry_pb2.TelemetrySummary:
        if request.since_unix_ms < 0 or request.until_unix_ms < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "times must be >= 0 (unix ms)")
        if request.until_unix_ms and request.since_unix_ms > request.until_unix_ms:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"since ({request.since_unix_ms}) is after until ({request.until_unix_ms})",
            )
        if len(request.agent_ids) + len(request.program_sha256s) > MAX_FILTERS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {MAX_FILTERS} agent ids and program sha256s per query",
            )
        return (await summarize(self._source, request)).to_proto()
