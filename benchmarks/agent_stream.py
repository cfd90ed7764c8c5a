"""Agent streaming benchmark: a real spikefleet-agent process (sim backend) on loopback.

Measures, from a client in this process (``AsyncAgentClient``):
- throughput with 32 frames per message and with 1 frame per message (pipelined stream);
- per-message latency (p50/p95/p99) at an offered 1,000 frames/s, 1 frame per message;
- for comparison, 1 frame per message through the sync ``AgentClient``;
- the agent's and the client's CPU time per message in each throughput phase.

Frames are 34x34x2 4-bit event-count frames with about 10% active pixels; the
program is the reference network's shape (Conv 32 s2 -> Conv 64 s2 GAP -> FC 10)
with random int4 weights. Run: ``.venv/bin/python benchmarks/agent_stream.py``.

``--events`` measures raw events through ``StreamEvents``, binned by the
program's input spec (10 ms windows; 346x260 and 1280x720 sensors, downsampled
to the program's input), against the frames path (``Stream`` with the same
frames, made offline) in the same run, and the binning alone in this process.
Events/s per agent core = events / the agent's CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import numpy as np
from support.agent import make_key, make_program, random_frames, signed_program

from spikefleet.client.agent import AgentClient, AsyncAgentClient
from spikefleet.program.signing import TrustedKeys
from spikefleet_agent.programs.slots import SlotStore

ROOT = Path(__file__).resolve().parent.parent


def start_agent(root: Path, unix: bool = False) -> tuple[subprocess.Popen[str], str]:
    """A real agent process; its inference API on 127.0.0.1 TCP, or a unix socket."""
    key = make_key(root / "keys")
    sha, data = signed_program(make_program(1, "bench"), key)
    store = SlotStore(root / "state" / "programs", TrustedKeys.load(root / "keys"))
    store.write("a", data)
    store.activate("a", sha)
    listen = f"unix://{root / 'inference.sock'}" if unix else "127.0.0.1:0"
    config = root / "agent.toml"
    config.write_text(
        f'agent_id = "bench"\nstate_dir = "{root / "state"}"\nlock_dir = "{root / "locks"}"\n'
        f'trusted_keys = ["{root / "keys"}"]\n[inference]\naddress = "{listen}"\n'
        "[telemetry]\ninterval_s = 5.0\n"
    )
    agent = subprocess.Popen(
        [str(Path(sys.executable).parent / "spikefleet-agent"), "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    agent_log = agent.stderr
    assert agent_log is not None
    for line in agent_log:
        if "inference_port" in line:
            drain = threading.Thread(target=lambda: [None for _ in agent_log], daemon=True)
            drain.start()  # keep the pipe empty so the agent never blocks on a log line
            port = json.loads(line)["inference_port"]
            return agent, listen if unix else f"127.0.0.1:{port}"
    raise SystemExit("agent did not start")


async def throughput(
    client: AsyncAgentClient, frames: np.ndarray, per_message: int, seconds: float
) -> tuple[float, int]:
    """Frames answered per second, timed from the first answer (stream set-up excluded),
    and the messages answered in all."""
    batch = frames[:per_message]

    def batches() -> Iterator[np.ndarray]:
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            yield batch

    start = 0.0
    answered = messages = 0
    async for prediction in client.stream(batches()):
        messages += 1
        if not start:
            start = time.perf_counter()
            continue
        answered += len(prediction.classes)
    return answered / (time.perf_counter() - start), messages


def sync_throughput(client: AgentClient, frames: np.ndarray, seconds: float) -> tuple[float, int]:
    """The same single-frame stream through the sync client (a gRPC thread per request side)."""
    batch = frames[:1]
    stop = time.perf_counter() + seconds

    def batches() -> Iterator[np.ndarray]:
        while time.perf_counter() < stop:
            yield batch

    start = time.perf_counter()
    answered = sum(len(p.classes) for p in client.stream(batches()))
    return answered / (time.perf_counter() - start), answered


async def latency_at_rate(
    client: AsyncAgentClient, frames: np.ndarray, rate: float, count: int
) -> dict:
    """Offer ``rate`` single-frame messages a second on a schedule; latency = answer - send."""
    sent_at: list[float] = []
    latencies: list[float] = []
    interval = 1.0 / rate

    async def batches() -> AsyncIterator[np.ndarray]:
        start = time.perf_counter()
        for i in range(count):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at.append(time.perf_counter())
            yield frames[i % len(frames)][None]

    i = 0
    async for _ in client.stream(batches()):
        latencies.append(time.perf_counter() - sent_at[i])
        i += 1
    ms = np.asarray(latencies[count // 10 :]) * 1000  # skip warm-up
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "messages": len(ms)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Each side's CPU per message over a throughput phase: unlike frames/s on a shared
    machine, CPU per message shows what the path costs, whatever else runs."""

    def __init__(self, agent_pid: int) -> None:
        self._pid = agent_pid
        self._agent, self._client = cpu_seconds(agent_pid), os.times()

    def report(self, rate_and_messages: tuple[float, int]) -> dict:
        rate, messages = rate_and_messages
        now = os.times()
        client = now.user + now.system - self._client.user - self._client.system
        return {
            "frames_per_s": rate,
            "agent_cpu_us_per_message": (cpu_seconds(self._pid) - self._agent) / messages * 1e6,
            "client_cpu_us_per_message": client / messages * 1e6,
        }


async def with_cpu(phase: Awaitable[tuple[float, int]], agent_pid: int) -> dict:
    meter = CpuMeter(agent_pid)
    return meter.report(await phase)


async def measure(
    address: str, agent_pid: int, frames: np.ndarray, seconds: float, messages: int
) -> dict:
    async with AsyncAgentClient(address) as client:
        await client.infer(frames[:32])  # warm-up
        return {
            "32_per_message": await with_cpu(throughput(client, frames, 32, seconds), agent_pid),
            "1_per_message": await with_cpu(throughput(client, frames, 1, seconds), agent_pid),
            "latency_at_1000_fps": await latency_at_rate(client, frames, 1000.0, messages),
        }


def engine_alone(frames: np.ndarray, per_call: int, seconds: float) -> float:
    """The anchor: the same program and frames through Engine.run, no gRPC."""
    from spikefleet.engine import Engine

    engine = Engine(make_program(1, "bench"))
    batch = frames[:per_call]
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        engine.run(batch)
        calls += 1
    return calls * per_call / (time.perf_counter() - start)


def telemetry_ingest(root: Path, batches: int = 5000, agents: int = 100) -> dict:
    """Server side of the channel: telemetry batches stored per second, committed one by
    one vs grouped by the fleet's TelemetryWriter (the server's SQLite: WAL, synchronous=FULL)."""
    from spikefleet.v1 import fleet_pb2
    from spikefleet_server.fleet.ingest import TelemetryWriter
    from spikefleet_server.storage import open_database
    from spikefleet_server.telemetry import TelemetryStore

    def batch(i: int) -> fleet_pb2.TelemetryBatch:
        return fleet_pb2.TelemetryBatch(
            seq=i // agents + 1, frames=320, class_histogram=list(range(10)), latency_p99_ms=1.0
        )

    async def measure() -> tuple[float, float]:
        db = open_database(root / "one-by-one.db")
        store = TelemetryStore(db)
        single = min(batches, 1000)
        start = time.perf_counter()
        for i in range(single):
            await store.ingest(f"edge-{i % agents}", batch(i))
        one_by_one = single / (time.perf_counter() - start)
        db.close()

        db = open_database(root / "grouped.db")
        writer = TelemetryWriter(TelemetryStore(db))
        writer.start()
        acked = asyncio.Semaphore(0)
        start = time.perf_counter()
        for i in range(batches):
            writer.submit(f"edge-{i % agents}", batch(i), lambda new: acked.release())
        for _ in range(batches):
            await acked.acquire()
        grouped = batches / (time.perf_counter() - start)
        await writer.close()
        db.close()
        return one_by_one, grouped

    one_by_one, grouped = asyncio.run(measure())
    return {"one_by_one_batches_per_s": one_by_one, "grouped_batches_per_s": grouped}


EVENT_SENSORS = {
    # sensor -> (downsample, events per 10 ms window)
    "346x260": ((346, 260, 2), (2, 2), 100_000),
    "1280x720": ((1280, 720, 2), (8, 8), 200_000),
}


def event_recording(sensor: tuple[int, int, int], events: int, duration_us: int) -> np.ndarray:
    from spikefleet.events import EVENT_DTYPE

    rng = np.random.default_rng(0)
    out = np.empty(events, EVENT_DTYPE)
    out["x"] = rng.integers(0, sensor[0], events)
    out["y"] = rng.integers(0, sensor[1], events)
    out["t"] = np.sort(rng.integers(0, duration_us, events))
    out["p"] = rng.integers(0, 2, events).astype(bool)
    return out


def binning_alone(spec: object, packets: list[np.ndarray]) -> float:
    """Events/s per core of SpecBinner.push in this process (no gRPC, no engine)."""
    from spikefleet.events.binning import SpecBinner

    binner = SpecBinner(spec)  # type: ignore[arg-type]
    start = time.process_time()
    for packet in packets:
        binner.push(packet)
    return sum(len(p) for p in packets) / (time.process_time() - start)


def events_phase(name: str, seconds: float, packet_events: int) -> dict:
    """One sensor: StreamEvents with the spec vs Stream with the same frames, one agent."""
    from support.agent_process import AgentProcess
    from support.programs import program_for

    from spikefleet.events import InputSpec, WindowStart
    from spikefleet.events.binning import spec_frames

    sensor, downsample, per_window = EVENT_SENSORS[name]
    spec = InputSpec(
        sensor_size=sensor,
        time_window=10_000,
        window_start=WindowStart.ABSOLUTE,
        downsample=downsample,
        clip_bits=4,
    )
    program = program_for(spec, seed=1)
    windows = 50
    events = event_recording(sensor, per_window * windows, 10_000 * windows)
    data = events.tobytes()
    size = events.dtype.itemsize
    packets = [
        np.frombuffer(data[i * size : (i + packet_events) * size], events.dtype)
        for i in range(0, len(events), packet_events)
    ]
    frames = spec_frames(events, spec)
    result: dict = {
        "sensor": name,
        "frame_shape": list(spec.input_shape),
        "events_per_window": per_window,
        "events_per_packet": packet_events,
        "binning_alone_events_per_s_per_core": binning_alone(spec, packets),
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        AgentProcess(program, Path(tmp)) as agent,
        AgentClient(agent.address) as client,
    ):
        list(client.stream_events(packets[:4], sample_id=""))  # warm-up
        sent = answered = 0
        meter_cpu, wall = cpu_seconds(agent.proc.pid), time.perf_counter()  # type: ignore[union-attr]
        offset = 0
        while time.perf_counter() - wall < seconds:
            # the stream's clock moves on, so each round is new live time
            shifted = []
            for packet in packets:
                moved = packet.copy()
                moved["t"] += offset
                shifted.append(moved)
            offset += 10_000 * windows
            for reply in client.stream_events(shifted, sample_id=""):
                answered += len(reply.classes)
            sent += len(events)
        wall = time.perf_counter() - wall
        agent_cpu = cpu_seconds(agent.proc.pid) - meter_cpu  # type: ignore[union-attr]
        result["stream_events"] = {
            "events_per_s": sent / wall,
            "events_per_s_per_agent_core": sent / agent_cpu,
            "frames_per_s": answered / wall,
            "agent_cpu_share": agent_cpu / wall,
        }
        # the frames path: the same frames, made offline, 10 a message
        meter_cpu, wall = cpu_seconds(agent.proc.pid), time.perf_counter()  # type: ignore[union-attr]
        done = 0
        while time.perf_counter() - wall < seconds:
            batches = [frames[i : i + 10] for i in range(0, len(frames), 10)]
            done += sum(len(p.classes) for p in client.stream(batches))
        wall = time.perf_counter() - wall
        agent_cpu = cpu_seconds(agent.proc.pid) - meter_cpu  # type: ignore[union-attr]
        result["frames_path"] = {
            "frames_per_s": done / wall,
            "frames_per_s_per_agent_core": done / agent_cpu,
            "equivalent_events_per_s": done / wall * per_window,
            "agent_cpu_share": agent_cpu / wall,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--latency-messages", type=int, default=5000)
    parser.add_argument(
        "--unix", action="store_true", help="serve on a unix socket instead of 127.0.0.1 TCP"
    )
    parser.add_argument(
        "--ingest", action="store_true", help="measure the server's telemetry ingest instead"
    )
    parser.add_argument(
        "--events",
        action="store_true",
        help="measure raw events through StreamEvents with the program's input spec instead",
    )
    parser.add_argument("--packet-events", type=int, default=50_000)
    args = parser.parse_args()
    if args.events:
        results = {
            "events": [
                events_phase(name, args.seconds, args.packet_events) for name in EVENT_SENSORS
            ],
            "load_average_1min": os.getloadavg()[0],
        }
        print(json.dumps(results, indent=2, default=float))
        return
    if args.ingest:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(telemetry_ingest(Path(tmp)), indent=2))
        return
    frames = random_frames(256, seed=0, density=0.1)
    with tempfile.TemporaryDirectory() as tmp:
        agent, address = start_agent(Path(tmp), unix=args.unix)
        try:
            results = asyncio.run(
                measure(address, agent.pid, frames, args.seconds, args.latency_messages)
            )
            with AgentClient(address) as client:
                meter = CpuMeter(agent.pid)
                results["sync_client_1_per_message"] = meter.report(
                    sync_throughput(client, frames, args.seconds)
                )
        finally:
            agent.terminate()
            agent.wait(timeout=30)
    results["engine_alone_frames_per_s_batch_32"] = engine_alone(frames, 32, args.seconds)
    results["engine_alone_frames_per_s_batch_1"] = engine_alone(frames, 1, args.seconds)
    results["load_average_1min"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
