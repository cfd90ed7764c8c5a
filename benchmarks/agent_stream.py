"""Agent streaming benchmark: a real spikefleet-agent process (sim backend) on loopback.

Measures, from a client in this process:
- throughput with 32 frames per message and with 1 frame per message (pipelined stream);
- per-message latency (p50/p95/p99) at an offered 1,000 frames/s, 1 frame per message.

Frames are 34x34x2 4-bit event-count frames with about 10% active pixels; the
program is the reference network's shape (Conv 32 s2 -> Conv 64 s2 GAP -> FC 10)
with random int4 weights. Run: ``.venv/bin/python benchmarks/agent_stream.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "agent"))

from agent_helpers import make_key, make_program, random_frames, signed_program  # noqa: E402

from spikefleet.client.agent import AgentClient  # noqa: E402
from spikefleet.program.signing import TrustedKeys  # noqa: E402
from spikefleet_agent.programs.slots import SlotStore  # noqa: E402


def start_agent(root: Path) -> tuple[subprocess.Popen[str], str]:
    key = make_key(root / "keys")
    sha, data = signed_program(make_program(1, "bench"), key)
    store = SlotStore(root / "state" / "programs", TrustedKeys.load(root / "keys"))
    store.write("a", data)
    store.activate("a", sha)
    config = root / "agent.toml"
    config.write_text(
        f'agent_id = "bench"\nstate_dir = "{root / "state"}"\nlock_dir = "{root / "locks"}"\n'
        f'trusted_keys = ["{root / "keys"}"]\n[inference]\naddress = "127.0.0.1:0"\n'
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
            return agent, f"127.0.0.1:{json.loads(line)['inference_port']}"
    raise SystemExit("agent did not start")


def throughput(client: AgentClient, frames: np.ndarray, per_message: int, seconds: float) -> float:
    batch = frames[:per_message]
    stop = time.perf_counter() + seconds
    sent = [0]

    def batches() -> Iterator[np.ndarray]:
        while time.perf_counter() < stop:
            sent[0] += 1
            yield batch

    start = time.perf_counter()
    answered = sum(len(p.classes) for p in client.stream(batches()))
    elapsed = time.perf_counter() - start
    return answered / elapsed


def latency_at_rate(client: AgentClient, frames: np.ndarray, rate: float, count: int) -> dict:
    sent_at: list[float] = []
    latencies: list[float] = []
    interval = 1.0 / rate
    lock = threading.Lock()

    def batches() -> Iterator[np.ndarray]:
        start = time.perf_counter()
        for i in range(count):
            target = start + i * interval
            while (now := time.perf_counter()) < target:
                time.sleep(max(0.0, min(target - now, 0.0005)))
            with lock:
                sent_at.append(time.perf_counter())
            yield frames[i % len(frames)][None]

    for i, _ in enumerate(client.stream(batches())):
        with lock:
            latencies.append(time.perf_counter() - sent_at[i])
    ms = np.asarray(latencies[count // 10 :]) * 1000  # skip warm-up
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "messages": len(ms)}


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
    from spikefleet_server.db import Database
    from spikefleet_server.fleet import FleetStore
    from spikefleet_server.fleet.ingest import TelemetryWriter

    def batch(i: int) -> fleet_pb2.TelemetryBatch:
        return fleet_pb2.TelemetryBatch(
            seq=i // agents + 1, frames=320, class_histogram=list(range(10)), latency_p99_ms=1.0
        )

    db = Database(root / "one-by-one.db")
    store = FleetStore(db)
    single = min(batches, 1000)
    start = time.perf_counter()
    for i in range(single):
        store.ingest(f"edge-{i % agents}", batch(i))
    one_by_one = single / (time.perf_counter() - start)
    db.close()

    db = Database(root / "grouped.db")
    writer = TelemetryWriter(FleetStore(db))
    acked = threading.Semaphore(0)
    start = time.perf_counter()
    for i in range(batches):
        writer.submit(f"edge-{i % agents}", batch(i), lambda new: acked.release())
    for _ in range(batches):
        acked.acquire()
    grouped = batches / (time.perf_counter() - start)
    writer.close()
    db.close()
    return {"one_by_one_batches_per_s": one_by_one, "grouped_batches_per_s": grouped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--latency-messages", type=int, default=5000)
    parser.add_argument(
        "--ingest", action="store_true", help="measure the server's telemetry ingest instead"
    )
    args = parser.parse_args()
    if args.ingest:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(telemetry_ingest(Path(tmp)), indent=2))
        return
    frames = random_frames(256, seed=0, density=0.1)
    with tempfile.TemporaryDirectory() as tmp:
        agent, address = start_agent(Path(tmp))
        try:
            with AgentClient(address) as client:
                client.infer(frames[:32])  # warm-up
                results = {
                    "frames_per_s_32_per_message": throughput(client, frames, 32, args.seconds),
                    "frames_per_s_1_per_message": throughput(client, frames, 1, args.seconds),
                    "latency_at_1000_fps": latency_at_rate(
                        client, frames, 1000.0, args.latency_messages
                    ),
                }
        finally:
            agent.terminate()
            agent.wait(timeout=30)
    results["engine_alone_frames_per_s_batch_32"] = engine_alone(frames, 32, args.seconds)
    results["engine_alone_frames_per_s_batch_1"] = engine_alone(frames, 1, args.seconds)
    results["load_average_1min"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
