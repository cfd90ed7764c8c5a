"""Fleet benchmarks against a real spikefleet-server process on loopback.

    .venv/bin/python benchmarks/fleet.py rollout --agents 100 --bake 2
    .venv/bin/python benchmarks/fleet.py ingest --agents 1000 --duration 30

``rollout``: lightweight agents (spikefleet_server.rollouts.simagents, the real
control protocol over gRPC) on the old program; a rollout of a new one with a
10% canary (shadow-evaluated), waves 50%,100%, each phase baking ``--bake`` s.
Reports the wall time from CreateRollout to "succeeded" and what it adds beyond
the bake times (canary shadow + canary + 2 waves = 4 bakes).

``ingest``: agents each sending a telemetry batch every second (heartbeats
every 5 s) for ``--duration`` s; reports batches stored per second against
the offered rate, the agents' unacknowledged backlog, and the server process's
CPU and resident memory (from /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from spikefleet.client import Client
from spikefleet.client.rollouts import RolloutRequest
from spikefleet.program.codec import encode
from spikefleet.program.model import Activation, Convolutional, FullyConnected, InputData, Program
from spikefleet_server.config import hash_token
from spikefleet_server.db import Database
from spikefleet_server.keys import load_or_create
from spikefleet_server.registry import Registry
from spikefleet_server.rollouts.simagents import Behaviour, SimAgent

BIN = Path(sys.executable).parent
DEPLOYER, AGENT = "bench-deployer", "bench-agent"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def program(seed: int) -> Program:
    rng = np.random.default_rng(seed)
    return Program(
        name=f"bench-{seed}",
        layers=[
            InputData("input", (8, 8, 2), 4),
            Convolutional(
                "conv",
                rng.integers(-7, 8, size=(3, 3, 2, 4)).astype(np.int8),
                rng.integers(0, 8, 4).astype(np.int32),
                activation=Activation(1, np.ones(4, np.float32)),
            ),
            FullyConnected(
                "fc", rng.integers(-7, 8, size=(256, 10)).astype(np.int8), np.zeros(10, np.int32)
            ),
        ],
        labels=[str(d) for d in range(10)],
    )


class Server:
    """spikefleet-server serve, with two programs in its registry and bench tokens."""

    def __init__(self, root: Path, grpc_threads: int) -> None:
        data = root / "server"
        key = load_or_create(data / "keys" / "signing.key")
        db = Database(data / "spikefleet.db")
        registry = Registry(data / "programs", db, key)
        self.old = registry.put(encode(program(1)), name="old").sha256
        self.new = registry.put(encode(program(2)), name="new").sha256
        db.close()
        self.db_path = data / "spikefleet.db"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        tokens = "".join(
            f'[[tokens]]\nname = "{role}"\nrole = "{role}"\nsha256 = "{hash_token(token)}"\n'
            for role, token in (("deployer", DEPLOYER), ("agent", AGENT))
        )
        config = root / "server.toml"
        config.write_text(
            f'listen = "127.0.0.1:{self.port}"\ndata_dir = "{data}"\ninsecure_loopback = true\n'
            f'grpc_threads = {grpc_threads}\nlog_level = "warning"\n{tokens}'
        )
        self.process = subprocess.Popen(
            [str(BIN / "spikefleet-server"), "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        while True:
            line = lines.get(timeout=60)
            if re.search(r"listening on port", line):
                break

    def _drain(self, lines: queue.Queue[str]) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            lines.put(line)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stored_batches(self) -> int:
        with sqlite3.connect(self.db_path, timeout=30) as db:
            return int(db.execute("SELECT COUNT(*) FROM fleet_telemetry").fetchone()[0])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def start_agents(
    server: Server, count: int, *, heartbeat_s: float, telemetry_s: float
) -> list[SimAgent]:
    agents = [
        SimAgent(
            grpc.insecure_channel(server.address),
            f"sim-{i:04d}",
            labels={"fleet": "bench"},
            program_sha256=server.old,
            behaviour=Behaviour(frames_per_batch=100),
            heartbeat_s=heartbeat_s,
            telemetry_s=telemetry_s,
            metadata=(("authorization", f"Bearer {AGENT}"),),
        )
        for i in range(count)
    ]
    started = time.monotonic()
    for i, agent in enumerate(agents):
        agent.start()
        if i % 50 == 49:  # don't stampede the server's accept queue
            time.sleep(0.05)
    for agent in agents:
        if not agent.registered.wait(120):
            raise SystemExit(f"{agent.agent_id} did not register")
    print(f"{count} agents registered in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return agents


def bench_rollout(root: Path, count: int, bake_s: float) -> dict[str, object]:
    server = Server(root, grpc_threads=count + 64)
    agents = start_agents(server, count, heartbeat_s=1.0, telemetry_s=0.5)
    try:
        rollouts = Client(server.address, token=DEPLOYER).rollouts
        request = RolloutRequest(
            program_sha256="new",
            canary_percent=10,
            waves=(50.0, 100.0),
            bake_s=bake_s,
            min_agreement=0.98,
            max_error_rate=0.01,
        )
        started = time.monotonic()
        rollout = rollouts.create(request)
        for status in rollouts.watch(rollout.rollout_id):
            if status.final:
                break
        wall = time.monotonic() - started
        if status.state != "succeeded":
            raise SystemExit(f"rollout ended {status.state}: {status.reason}")
        on_new = sum(a.active == server.new for a in agents)
        bakes = 4 * bake_s
        return {
            "agents": count,
            "on_new_program": on_new,
            "bake_s": bake_s,
            "bakes_total_s": bakes,
            "wall_s": round(wall, 2),
            "overhead_s": round(wall - bakes, 2),
            "phases": status.phases,
        }
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


def bench_ingest(root: Path, count: int, duration_s: float) -> dict[str, object]:
    server = Server(root, grpc_threads=count + 64)
    agents = start_agents(server, count, heartbeat_s=5.0, telemetry_s=1.0)
    try:
        time.sleep(5.0)  # let start-up settle
        cpu0, stored0, t0 = server.cpu_seconds(), server.stored_batches(), time.monotonic()
        own0 = time.process_time()
        rss_peak = server.rss_mb()
        lags: list[int] = []
        while time.monotonic() - t0 < duration_s:
            time.sleep(1.0)
            rss_peak = max(rss_peak, server.rss_mb())
            lags.append(sum(a.sent_seq - a.acked_seq for a in agents))
        elapsed = time.monotonic() - t0
        cpu1, stored1 = server.cpu_seconds(), server.stored_batches()
        own = time.process_time() - own0
        connected = sum(a.registered.is_set() for a in agents)
        return {
            "agents": count,
            "connected_at_end": connected,
            "duration_s": round(elapsed, 1),
            "offered_batches_per_s": count,
            "stored_batches_per_s": round((stored1 - stored0) / elapsed, 1),
            "unacked_batches_max": max(lags),
            "unacked_batches_end": lags[-1],
            "server_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 1),
            "server_rss_mb_peak": round(rss_peak, 1),
            "load_generator_cpu_percent_of_one_core": round(100 * own / elapsed, 1),
            "machine_load_average_1m": os.getloadavg()[0],
        }
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    rollout = sub.add_parser("rollout", help="time a canary + waves rollout")
    rollout.add_argument("--agents", type=int, default=100)
    rollout.add_argument("--bake", type=float, default=2.0, help="seconds per phase")
    ingest = sub.add_parser("ingest", help="many agents sending telemetry every second")
    ingest.add_argument("--agents", type=int, default=1000)
    ingest.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spikefleet-bench-") as tmp:
        if args.what == "rollout":
            result = bench_rollout(Path(tmp), args.agents, args.bake)
        else:
            result = bench_ingest(Path(tmp), args.agents, args.duration)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
