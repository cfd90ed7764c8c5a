"""Fleet benchmarks against a real spikefleet-server process on loopback.

    .venv/bin/python benchmarks/fleet.py rollout --agents 100 --bake 2
    .venv/bin/python benchmarks/fleet.py ingest --agents 1000 --duration 30
    .venv/bin/python benchmarks/fleet.py ingest --agents 5000 --interval 5 --replicas 2 \
        --database throwaway --kill-one-at 20

``rollout``: lightweight agents (tests/support/simagents.py, the real
control protocol over gRPC) on the old program; a rollout of a new one with a
10% canary (shadow-evaluated), waves 50%,100%, each phase baking ``--bake`` s.
Reports the wall time from CreateRollout to "succeeded" and what it adds beyond
the bake times (canary shadow + canary + 2 waves = 4 bakes).

``ingest``: agents each sending a telemetry batch every period (``--interval``)
for ``--duration`` s, and a heartbeat each period only when the server does not
take telemetry as proof of life (an older server), as the real agent does; the
first after registering always. The agents are coroutines on grpc.aio, each with
its own connection (``--generators`` separate processes, so the server's CPU
is measured alone); they speak the real control protocol (Register,
heartbeats, telemetry, acks; each agent's stream written directly, one timer per
process keeping every agent's period, so a generator costs little more than gRPC's
own work per message). They dial ``--dial-per-s`` new connections a second in all
while they start. Reports whether the server kept up: batches
stored per second against the offered rate (from the server's database),
the unacknowledged backlog, the time from sending a batch to its ack
(committed), the heartbeats the agents sent, and the server process's CPU and
resident memory (from /proc).

The agents keep their batches in a spool until acked, numbered as the real agent
numbers them (a seq when made, connected or not; after a reconnect, sent again from
the last seq the server holds) and redial with the real agent's failover backoff. An
agent keeps its channel to each address (a new call on it dials a new connection once
the last one broke) instead of a new channel per session, and its calls have no
retries: the same on the wire, and a failover costs the generator less CPU.
After the window they stop making batches and empty their spools; the report
compares the batches made with the database's rows: ``batches_lost`` and
``batches_stored_twice`` must both be 0 (with ``--kill-one-at`` too).

``--replicas N --database URL`` runs N server processes on one PostgreSQL
(``throwaway``: a temporary cluster started for the run, tests/support/postgres.py);
agents are spread over them and fail over to the next when their replica goes.
``--interval`` is the agents' telemetry and heartbeat period (the real default is
5 s). ``--kill-one-at S`` kills the first replica with SIGKILL S seconds into the
measured window and reports how long until every agent was registered again, and
what the failover cost the load generators: how long until the last agent noticed its
stream end and the last redialled (wrote its Register), and their CPU from the kill
until then beyond their rate before it, per failover (``generators_cpu_ms_per_failover_*``).
``--listeners N`` sets the replicas' ``listeners``; ``--generator-nice N`` runs the
load generators at a lower priority than the servers (a diagnostic: on this machine
they compete with the servers for the same two cores, as devices elsewhere would not).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import itertools
import json
import os
import queue
import random
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import structlog
from support.program_factory import small_program
from support.simagents import Behaviour, SimAgent

from spikefleet.client import Client
from spikefleet.client.rollouts import RolloutRequest
from spikefleet.program.codec import encode
from spikefleet.v1 import fleet_pb2, fleet_pb2_grpc
from spikefleet_agent.config import ServerConfig as AgentServerConfig
from spikefleet_agent.control.channel import failover_delay
from spikefleet_server.config import hash_token
from spikefleet_server.keys import load_or_create
from spikefleet_server.registry import Registry
from spikefleet_server.storage import open_database

BIN = Path(sys.executable).parent
RECONNECT_MIN_S = AgentServerConfig.reconnect_min_s  # the real agent's defaults
RECONNECT_MAX_S = AgentServerConfig.reconnect_max_s
DRAIN_S = 60.0  # after the window, how long the agents may take to empty their spools
DEPLOYER, AGENT = "bench-deployer", "bench-agent"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Server:
    """spikefleet-server serve (``replicas`` processes on ``database`` when given), with
    two programs in its registry and bench tokens."""

    def __init__(
        self,
        root: Path,
        grpc_threads: int,
        *,
        database: str = "",
        replicas: int = 1,
        listeners: int = 0,
    ) -> None:
        data = root / "server"
        key_path = data / "keys" / "signing.key"
        key = load_or_create(key_path)
        self.database = database
        self.db_path = data / "spikefleet.db"
        db = open_database(database or self.db_path)
        registry = Registry(data / "programs", db, key)
        self.old = asyncio.run(registry.put(encode(small_program(1, "bench-1")), name="old")).sha256
        self.new = asyncio.run(registry.put(encode(small_program(2, "bench-2")), name="new")).sha256
        db.close()
        tokens = "".join(
            f'[[tokens]]\nname = "{role}"\nrole = "{role}"\nsha256 = "{hash_token(token)}"\n'
            for role, token in (("deployer", DEPLOYER), ("agent", AGENT))
        )
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[str]] = []
        self.problems: list[str] = []
        for index in range(replicas):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            replica_data = data if replicas == 1 else root / f"replica-{index}"
            config = root / f"server-{index}.toml"
            config.write_text(
                f'listen = "127.0.0.1:{port}"\ndata_dir = "{replica_data}"\n'
                f'insecure_loopback = true\nsigning_key = "{key_path}"\n'
                f'grpc_threads = {grpc_threads}\nlog_level = "warning"\n'
                + (f"listeners = {listeners}\n" if listeners else "")
                + tokens
            )
            argv = [str(BIN / "spikefleet-server"), "serve", "--config", str(config)]
            if database:
                argv += ["--database", database]
            process = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=self._drain, args=(process, lines), daemon=True).start()
            while True:
                line = lines.get(timeout=60)
                if re.search(r"listening on port", line):
                    break
            self.ports.append(port)
            self.processes.append(process)
        self.port = self.ports[0]
        self.process = self.processes[0]
        self.alive = list(range(replicas))
        self._dead_cpu = self._dead_wait = 0.0  # what killed replicas had used

    def _drain(self, process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
            if '"level": "error"' in line or '"level": "warning"' in line:
                self.problems.append(line.strip())

    def report_problems(self, limit: int = 5) -> None:
        """The servers' warnings and errors (their log level is "warning"), on stderr."""
        for line in self.problems[:limit]:
            print(f"server: {line[:400]}", file=sys.stderr)
        if len(self.problems) > limit:
            print(f"server: ... {len(self.problems) - limit} more", file=sys.stderr)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def _pids(self) -> list[int]:
        return [self.processes[i].pid for i in self.alive]

    def cpu_seconds(self) -> float:
        return self._dead_cpu + sum(_cpu_seconds(pid) for pid in self._pids())

    def runqueue_wait_seconds(self) -> float:
        """Time the server's threads were ready to run but waited for a CPU (others' work)."""
        return self._dead_wait + sum(_runqueue_wait(pid) for pid in self._pids())

    def _status(self, pid: int, field: str) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
        return 0

    def threads(self) -> int:
        return sum(self._status(pid, "Threads:") for pid in self._pids())

    def rss_mb(self) -> float:
        return sum(self._status(pid, "VmRSS:") for pid in self._pids()) / 1024

    def stored_batches(self) -> int:
        if not self.database:
            with sqlite3.connect(self.db_path, timeout=30) as db:
                return int(db.execute("SELECT COUNT(*) FROM fleet_telemetry").fetchone()[0])
        db = open_database(self.database, migrate=False)
        try:
            with db.read() as conn:
                return int(conn.exec_driver_sql("SELECT COUNT(*) FROM fleet_telemetry").scalar())
        finally:
            db.close()

    def stored_check(self, released: dict[str, int]) -> tuple[int, int, int]:
        """(rows, distinct batches, lost): a load-generator agent numbers its batches in
        ``frames`` (1, 2, ...), so a batch stored twice (under two seqs) counts once in
        distinct, and one the agent let go of (acked: ``released[agent]`` is how many)
        but the database lacks is lost."""
        query = "SELECT agent_id, frames FROM fleet_telemetry"
        if not self.database:
            with sqlite3.connect(self.db_path, timeout=30) as db:
                stored = db.execute(query).fetchall()
        else:
            db = open_database(self.database, migrate=False)
            try:
                with db.read() as conn:
                    stored = [tuple(row) for row in conn.exec_driver_sql(query)]
            finally:
                db.close()
        distinct = {(agent, int(frames)) for agent, frames in stored}
        lost = sum(
            1
            for agent, count in released.items()
            for number in range(1, count + 1)
            if (agent, number) not in distinct
        )
        return len(stored), len(distinct), lost

    def bytes_per_batch(self) -> float:
        """What one stored telemetry batch costs the database (table, indexes, TOAST)."""
        if not self.database:
            return 0.0
        db = open_database(self.database, migrate=False)
        try:
            with db.read() as conn:
                size, rows = conn.exec_driver_sql(
                    "SELECT pg_total_relation_size('fleet_telemetry'), COUNT(*) "
                    "FROM fleet_telemetry"
                ).one()
        finally:
            db.close()
        return float(size) / max(1, int(rows))

    def kill(self, index: int) -> None:
        pid = self.processes[index].pid
        self._dead_cpu += _cpu_seconds(pid)
        self._dead_wait += _runqueue_wait(pid)
        self.processes[index].kill()
        self.processes[index].wait(timeout=30)
        self.alive.remove(index)

    def stop(self) -> None:
        for index in self.alive:
            self.processes[index].terminate()
        for index in self.alive:
            self.processes[index].wait(timeout=60)


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
            program_sha256=server.new,
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


class Generator:
    """A load-generator child process (``fleet.py agents``) and its per-second reports."""

    def __init__(
        self,
        addresses: list[str],
        first: int,
        count: int,
        seconds: float,
        interval_s: float,
        dial_per_s: float,
        nice: int = 0,
    ) -> None:
        self.process = subprocess.Popen(
            [
                *(["nice", "-n", str(nice)] if nice else []),  # exec's: the same pid
                sys.executable,
                __file__,
                "agents",
                "--address",
                ",".join(addresses),
                "--first",
                str(first),
                "--count",
                str(count),
                "--seconds",
                str(seconds),
                "--interval",
                str(interval_s),
                "--dial-per-s",
                str(dial_per_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.reports: queue.Queue[dict[str, float]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.reports.put(json.loads(line))

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.process.pid)

    def drain(self) -> None:
        """Stop making batches; the agents report once their spools are empty."""
        assert self.process.stdin is not None
        self.process.stdin.write("drain\n")
        self.process.stdin.flush()

    def final_report(self) -> dict[str, float]:
        while not (report := _next_report(self)).get("final"):
            pass
        return report


def _runqueue_wait(pid: int) -> float:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # thread ended
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def _family_cpu_seconds(root_pid: int) -> float:
    """CPU of a process and its live children (PostgreSQL's postmaster and backends)."""
    total = _cpu_seconds(root_pid)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == root_pid:
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def bench_ingest(
    root: Path,
    count: int,
    duration_s: float,
    generators: int,
    warmup_s: float = 10.0,
    *,
    interval_s: float = 1.0,
    replicas: int = 1,
    database: str = "",
    kill_one_at_s: float = 0.0,
    database_pid: int = 0,
    dial_per_s: float = 1000.0,
    listeners: int = 0,
    generator_nice: int = 0,
) -> dict[str, object]:
    server = Server(
        root, grpc_threads=16, database=database, replicas=replicas, listeners=listeners
    )
    shares = [count // generators + (i < count % generators) for i in range(generators)]
    run_s = warmup_s + duration_s + 600  # the generators are stopped by us, not by this
    children = [
        Generator(
            server.addresses,
            sum(shares[:i]),
            share,
            run_s,
            interval_s,
            dial_per_s / generators,
            generator_nice,
        )
        for i, share in enumerate(shares)
        if share
    ]
    offered = count / interval_s
    killed_at: float | None = None
    reconnected_s: float | None = None
    try:
        started = time.monotonic()
        latest = [{"registered": 0.0} for _ in children]
        while sum(r["registered"] for r in latest) < count:
            if time.monotonic() - started > 300:
                raise SystemExit(f"only {sum(r['registered'] for r in latest)} agents registered")
            latest = [_next_report(child) for child in children]
        registered_s = time.monotonic() - started
        print(f"{count} agents registered in {registered_s:.1f}s", file=sys.stderr)
        time.sleep(warmup_s)
        for child in children:  # reports from before the window are stale now
            while not child.reports.empty():
                child.reports.get_nowait()
        first = [_next_report(child) for child in children]
        cpu0, stored0, t0 = server.cpu_seconds(), server.stored_batches(), time.monotonic()
        db_cpu0 = _family_cpu_seconds(database_pid) if database_pid else 0.0
        waited0 = server.runqueue_wait_seconds()
        gen0 = sum(child.cpu_seconds() for child in children)
        rss_peak = server.rss_mb()
        backlog: list[float] = []
        registered_min = float(count)
        reports: list[list[dict[str, float]]] = []
        after_kill: list[tuple[float, int]] = []  # (s since the kill, registered)
        tick_cpu, tick_gen, tick_t = cpu0, gen0, t0
        gen_samples = [(t0, gen0)]  # (time, the generators' CPU s), for the failover's cost
        ends_at_kill = 0
        while time.monotonic() - t0 < duration_s:
            if kill_one_at_s and killed_at is None and time.monotonic() - t0 >= kill_one_at_s:
                ends_at_kill = _stream_ends(reports[-1])
                gen_samples.append((time.monotonic(), sum(c.cpu_seconds() for c in children)))
                server.kill(0)  # SIGKILL: its agents fail over to the others
                killed_at = time.monotonic()
                print(f"t={killed_at - t0:5.1f}s killed replica 0", file=sys.stderr)
            now_reports = [_next_report(child) for child in children]
            reports.append(now_reports)
            registered_now = sum(r["registered"] for r in now_reports)
            if killed_at is not None:
                after_kill.append((round(time.monotonic() - killed_at, 1), int(registered_now)))
                seen = min(n for _, n in after_kill) < count  # a report may predate it
                if reconnected_s is None and seen and registered_now == count:
                    reconnected_s = time.monotonic() - killed_at
            rss_peak = max(rss_peak, server.rss_mb())
            backlog.append(sum(r["sent"] - r["acked"] for r in now_reports))
            now, cpu, gen = (
                time.monotonic(),
                server.cpu_seconds(),
                sum(child.cpu_seconds() for child in children),
            )
            gen_samples.append((now, gen))
            dialling = sum(r["dialling"] for r in now_reports)
            print(  # the timeline: late acks in bursts? after a kill, who waits for what?
                f"t={now - t0:5.1f}s registered={registered_now:5.0f} "
                f"backlog={backlog[-1]:5.0f} "
                f"ack p99={max(r['ack_p99_s'] for r in now_reports):.3f}s "
                f"max={max(r['ack_max_s'] for r in now_reports):.3f}s "
                f"dialling={dialling:4.0f} backoff={count - registered_now - dialling:4.0f} "
                f"registrations={sum(r['registrations'] for r in now_reports):4.0f} "
                f"to_redial={sum(r['redials_pending'] for r in now_reports):4.0f} "
                f"(longest {max(r['register_max_s'] for r in now_reports):.1f}s) "
                f"servers={100 * (cpu - tick_cpu) / (now - tick_t):3.0f}% "
                f"generators={100 * (gen - tick_gen) / (now - tick_t):3.0f}%",
                file=sys.stderr,
            )
            tick_cpu, tick_gen, tick_t = cpu, gen, now
            if killed_at is None:  # after a kill, the reconnect time says it
                registered_min = min(registered_min, registered_now)
        elapsed = time.monotonic() - t0
        cpu1, stored1 = server.cpu_seconds(), server.stored_batches()
        db_cpu1 = _family_cpu_seconds(database_pid) if database_pid else 0.0
        waited1 = server.runqueue_wait_seconds()
        gen1 = sum(child.cpu_seconds() for child in children)
        last = reports[-1]
        sent = sum(r["sent"] for r in last) - sum(r["sent"] for r in first)
        acked = sum(r["acked"] for r in last) - sum(r["acked"] for r in first)
        beats = sum(r["heartbeats"] for r in last) - sum(r["heartbeats"] for r in first)
        windows = [r for window in reports for r in window]
        acks = sum(r["acks"] for r in windows)
        late = sum(r["acks_over_1s"] for r in windows) / max(acks, 1)
        ack_p50 = sorted(r["ack_p50_s"] for r in windows)[len(windows) // 2]
        ack_p99 = max(r["ack_p99_s"] for r in windows)
        ack_max = max(r["ack_max_s"] for r in windows)
        stored_rate = (stored1 - stored0) / elapsed
        kept_up = (  # every agent stayed; stored what was offered; acks within a period
            registered_min == count
            and stored_rate >= 0.97 * offered
            and acked >= 0.97 * sent
            and backlog[-1] <= 2 * count
            and late <= 0.01
        )
        cpu_percent = 100 * (cpu1 - cpu0) / elapsed
        # every batch made must be stored exactly once: stop making them, let the spools
        # empty, then compare what the agents made with what the database holds
        for child in children:
            child.drain()
        finals = [child.final_report() for child in children]
        made, spooled = sum(r["sent"] for r in finals), sum(r["spooled"] for r in finals)
        for child in children:  # nothing in flight any more while the database is read
            child.process.terminate()
            child.process.wait(timeout=60)
        time.sleep(1.0)  # what the servers received is committed meanwhile
        released: dict[str, int] = {a: n for r in finals for a, n in r["released"].items()}
        rows, distinct, lost = server.stored_check(released)
        failover = _failover_cost(killed_at, reconnected_s, reports, ends_at_kill, gen_samples)
        stream_ends: collections.Counter[str] = collections.Counter()
        stream_details: dict[str, str] = {}
        for report in finals:
            stream_ends.update(report["stream_ends"])
            for name, details in report["stream_details"].items():
                stream_details.setdefault(name, details)
        return {
            "agents": count,
            "interval_s": interval_s,
            "replicas": replicas,
            "database": "postgresql" if database else "sqlite",
            "killed_one_replica": killed_at is not None,
            "reconnected_all_within_s": (
                round(reconnected_s, 1) if reconnected_s is not None else None
            ),
            "registered_after_kill": after_kill[::3],  # (s since the kill, agents), every 3rd
            **failover,
            "listeners_per_replica": listeners or "default",
            "generator_nice": generator_nice,
            "generator_processes": len(children),
            "registered_in_s": round(registered_s, 1),
            "connected_min": int(registered_min),
            "duration_s": round(elapsed, 1),
            "offered_batches_per_s": round(offered, 1),
            "made_batches_per_s": round(sent / elapsed, 1),
            "stored_batches_per_s": round(stored_rate, 1),
            "acked_batches_per_s": round(acked / elapsed, 1),
            "heartbeats_sent_per_s": round(beats / elapsed, 1),
            "unacked_batches_max": int(max(backlog)),
            "unacked_batches_end": int(backlog[-1]),
            "ack_latency_median_s": round(ack_p50, 3),
            "acks_later_than_1s_percent": round(100 * late, 2),
            "ack_latency_p99_s_worst_second": round(ack_p99, 3),
            "ack_latency_max_s": round(ack_max, 3),
            "kept_up": kept_up,
            "batches_made": int(made),
            "batches_stored": distinct,
            "batches_lost": lost,
            "batches_stored_twice": rows - distinct,
            "batches_still_spooled": int(spooled),
            "agent_stream_ends": dict(stream_ends),
            "agent_stream_end_details": stream_details,
            "server_cpu_percent_of_one_core": round(cpu_percent, 1),
            "server_cpu_percent_per_1000_agents": round(1000 * cpu_percent / count, 1),
            "server_rss_mb_peak": round(rss_peak, 1),
            "server_rss_mb_per_1000_agents": round(1000 * rss_peak / count, 1),
            "server_threads": server.threads(),
            "database_bytes_per_batch": round(server.bytes_per_batch()),
            "database_cpu_percent_of_one_core": (
                round(100 * (db_cpu1 - db_cpu0) / elapsed, 1) if database_pid else None
            ),
            "server_waiting_for_cpu_percent": round(100 * (waited1 - waited0) / elapsed, 1),
            "generators_cpu_percent_of_one_core": round(100 * (gen1 - gen0) / elapsed, 1),
            "machine_load_average_1m": os.getloadavg()[0],
        }
    finally:
        for child in children:
            child.process.terminate()
        for child in children:
            child.process.wait(timeout=60)
        server.stop()
        server.report_problems()


def _stream_ends(reports: list[dict[str, Any]]) -> int:
    """The streams the generators' agents saw end so far, all together."""
    return sum(sum(report["stream_ends"].values()) for report in reports)


def _failover_cost(
    killed_at: float | None,
    reconnected_s: float | None,
    reports: list[list[dict[str, float]]],
    ends_at_kill: int,
    samples: list[tuple[float, float]],
) -> dict[str, object]:
    """What the load generators spent on the failover: the streams that ended after the
    kill, how long until the last of them was noticed and the last redialled (its
    Register written), and the generators' CPU from the kill until every agent was
    registered again, beyond what they spent at the rate before the kill (per failover).
    """
    if killed_at is None:
        return {}

    def cpu_at(when: float) -> float:  # linear between the once-a-second samples
        for (t_a, c_a), (t_b, c_b) in itertools.pairwise(samples):
            if t_a <= when <= t_b:
                return c_a + (c_b - c_a) * (when - t_a) / max(t_b - t_a, 1e-9)
        return samples[-1][1]

    last = reports[-1]
    failovers = _stream_ends(last) - ends_at_kill
    pending = sum(r["redials_pending"] for r in last)
    noticed = max(r["last_stream_end"] for r in last) - killed_at
    redialled = max(r["last_redial"] for r in last) - killed_at
    before = [(t, c) for t, c in samples if t <= killed_at]
    rate = (before[-1][1] - before[0][1]) / max(before[-1][0] - before[0][0], 1e-9)
    result: dict[str, object] = {
        "failovers": failovers,
        "failovers_noticed_all_s": round(noticed, 2),
        "failovers_redialled_all_s": round(redialled, 2) if not pending else None,
        "generators_cpu_rate_before_kill": round(rate, 3),
    }
    for name, span in (
        ("redialled", redialled if not pending else None),
        ("reconnected", reconnected_s),
    ):
        if span is None:
            continue
        used = cpu_at(killed_at + span) - cpu_at(killed_at)
        extra = used - rate * span
        result[f"generators_cpu_s_kill_to_{name}"] = round(used, 2)
        result[f"generators_cpu_ms_per_failover_to_{name}"] = round(
            1000 * extra / max(failovers, 1), 2
        )
    return result


def _next_report(child: Generator) -> dict[str, float]:
    try:
        return child.reports.get(timeout=60)
    except queue.Empty:
        raise SystemExit(f"load generator {child.process.pid} stopped reporting") from None


# -- the load generator: many agents as coroutines in one process -------------------------


STREAM_ENDS: collections.Counter[str] = collections.Counter()  # by status code
STREAM_DETAILS: dict[str, str] = {}  # the first details seen with each


class Failovers:
    """When this process's agents last saw a stream end and last redialled after one
    (time.monotonic(), one clock for every process on the machine), and how many saw
    their stream end and have not written a Register on a new one yet."""

    last_end = 0.0
    last_redial = 0.0
    pending = 0


SEND_WINDOW = 256  # batches in flight beyond the last ack, as the real agent's channel
TICK_S = 0.01  # the agents' periods are kept by one timer per process, this fine
SHA = "0" * 64
METADATA = (("authorization", f"Bearer {AGENT}"),)
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # a connection of its own
    # The real agent's calls have no retry policy either; this also drops gRPC's
    # transparent retry of a call that never reached a server (that call fails and the
    # agent redials after its backoff, no sooner than the real agent would be back) and
    # the retry filter's own work: about a sixth of the generator's CPU per failover.
    ("grpc.enable_retries", 0),
]
# what every batch of these agents has in common (CopyFrom is cheaper than the fields)
BATCH = fleet_pb2.TelemetryBatch(
    program_sha256=SHA,
    backend="sim",
    predictions=100,
    latency_p50_ms=0.5,
    latency_p95_ms=0.9,
    latency_p99_ms=1.0,
)


class MemorySpool:
    """The real agent's spool numbering (spikefleet_agent.telemetry.spool) in memory: a
    batch gets the next seq when it is made, connected or not; what the server acked is
    dropped; at registration the server's last seq is acked, and if it is one this
    spool never issued (a wiped agent, an id reused) what waits is renumbered after it.
    Each batch carries its own number in ``frames``, so the database's rows say whether
    any batch was stored twice or never. Batches wait as the messages that carry them."""

    def __init__(self) -> None:
        self.next_seq = 1
        self.made = 0
        self.waiting: dict[int, fleet_pb2.AgentMessage] = {}  # seq -> message, seq order

    def append(self, message: fleet_pb2.AgentMessage) -> int:
        batch = message.telemetry
        self.made += 1
        batch.seq, batch.frames = self.next_seq, self.made
        self.waiting[batch.seq] = message
        self.next_seq += 1
        return batch.seq

    def rebase(self, server_seq: int) -> None:
        if self.next_seq > server_seq:
            return
        messages, self.waiting = list(self.waiting.values()), {}
        for seq, message in enumerate(messages, start=server_seq + 1):
            message.telemetry.seq = seq
            self.waiting[seq] = message
        self.next_seq = server_seq + 1 + len(messages)

    def ack(self, seq: int) -> None:
        waiting = self.waiting
        while waiting:
            first = next(iter(waiting))
            if first > seq:
                break
            del waiting[first]

    def pending(self, after_seq: int, limit: int) -> list[fleet_pb2.AgentMessage]:
        out = []
        for seq, message in self.waiting.items():
            if seq > after_seq:
                out.append(message)
                if len(out) == limit:
                    break
        return out


class AioAgent:
    """One agent on its own connection: Register, then a heartbeat and a telemetry batch
    every period (:meth:`tick`, from the process's one timer), spooled until acked and
    sent from the spool in seq order (after a reconnect, from the last seq the server
    holds). Like the real agent it skips a period's heartbeat when the server said a
    telemetry batch counts as one, the heartbeat says what the last one sent on this
    stream said and a batch went up during the period. Redials with the real agent's
    jittered failover backoff. Counts batches made and acked and how long each ack took
    after its batch was sent.

    One task per agent while connected to nothing, two while registered (its stream's
    reader and its writer); the stream is written directly (no request iterator)."""

    def __init__(self, addresses: list[str], agent_id: str, phase_s: float) -> None:
        self.addresses = addresses
        self.index = random.randrange(len(addresses))  # a fleet spreads over replicas
        self.agent_id = agent_id
        self.phase_s = phase_s  # agents don't beat in step
        self.registered = False
        self.session_registered = False  # in the current (or last) session
        self.dialled_at: float | None = None  # in a session not registered yet, since
        self.redial_pending = False  # its stream ended; no Register written since
        self._channels: dict[str, grpc.aio.Channel] = {}  # by address, see _session
        self._connect: dict[str, Any] = {}  # their Connect methods
        self.register_seconds: list[float] = []  # dial to Registered, per session
        self.spool = MemorySpool()
        self.acked = 0
        self.sent_at: dict[int, float] = {}
        self.ack_seconds: list[float] = []
        self._wake = asyncio.Event()
        self._beat: fleet_pb2.AgentMessage | None = None  # a heartbeat to send
        # on this stream: the server takes telemetry as proof of life (Registered), the
        # content of the last heartbeat sent, a batch went up since the last tick
        self._telemetry_counts = False
        self._last_beat: tuple[str, str, str] | None = None
        self._batch_this_period = False
        self.beats = 0  # heartbeats written, over all sessions
        self._register = fleet_pb2.AgentMessage(
            register=fleet_pb2.Register(
                agent_id=agent_id,
                labels={"fleet": "bench"},
                backend="sim",
                program_sha256=SHA,
                version="bench",
            )
        )

    @property
    def made(self) -> int:
        return self.spool.made

    def tick(
        self,
        now_ms: int,
        period_ms: int,
        heartbeat: fleet_pb2.AgentMessage,
        content: tuple[str, str, str],
    ) -> None:
        """A period passed: a heartbeat (while registered, unless it may be skipped) and a
        batch into the spool. ``content``: the heartbeat's program, health and shadow."""
        if self.registered:
            if not (
                self._telemetry_counts and self._batch_this_period and content == self._last_beat
            ):
                self._beat = heartbeat
            self._batch_this_period = False
        message = fleet_pb2.AgentMessage()
        batch = message.telemetry
        batch.CopyFrom(BATCH)
        batch.start_unix_ms, batch.end_unix_ms = now_ms - period_ms, now_ms
        self.spool.append(message)
        self._wake.set()

    async def run(self) -> None:
        """Stay connected: when the stream ends, the next replica after the real agent's
        backoff (short after a session that registered, growing per round of failures)."""
        failures = 0
        while True:
            self.session_registered = False
            self.dialled_at = time.monotonic()
            try:
                await self._session(self.addresses[self.index])
            except grpc.aio.AioRpcError as exc:  # counted: before or after registering
                if not self.redial_pending:
                    self.redial_pending = True
                    Failovers.pending += 1
                Failovers.last_end = time.monotonic()
                when = "" if self.session_registered else " before Registered"
                name = f"{exc.code().name}{when}"
                STREAM_ENDS[name] += 1
                if name not in STREAM_DETAILS:  # formatted for the first of its kind only
                    details = f"{exc.details() or ''} ({exc.debug_error_string() or ''})"
                    STREAM_DETAILS[name] = details[:400]
            self.dialled_at = None
            failures = 0 if self.session_registered else failures + 1
            self.index = (self.index + 1) % len(self.addresses)
            await asyncio.sleep(
                failover_delay(failures, len(self.addresses), RECONNECT_MIN_S, RECONNECT_MAX_S)
            )

    async def _session(self, address: str) -> None:
        """One Connect stream: Register, then read until it ends.

        The agent keeps its channel to each address while it works, as one connection
        that a new call redials once it broke (an idle channel does not redial by
        itself): much cheaper for the load generator than a new channel per session, and
        the same on the wire. A channel whose call failed before Registered is closed,
        so none keeps retrying a dead address in the background."""
        connect = self._connect.get(address)
        if connect is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            connect = self._connect[address] = fleet_pb2_grpc.FleetStub(channel).Connect
            self._channels[address] = channel
        call = connect(metadata=METADATA)
        sender: asyncio.Task[None] | None = None
        try:
            await call.write(self._register)
            if self.redial_pending:
                self.redial_pending = False
                Failovers.pending -= 1
                Failovers.last_redial = time.monotonic()
            while (message := await call.read()) is not grpc.aio.EOF:
                assert isinstance(message, fleet_pb2.ServerMessage)
                if message.HasField("telemetry_ack"):
                    seq = message.telemetry_ack.seq
                    self.spool.ack(seq)
                    if seq > self.acked:
                        self.acked = seq
                    sent_at = self.sent_at.pop(seq, None)
                    if sent_at is not None:
                        self.ack_seconds.append(time.monotonic() - sent_at)
                    if self.spool.waiting:  # the window may have room again
                        self._wake.set()
                elif message.HasField("registered"):
                    last = message.registered.last_telemetry_seq
                    self.spool.rebase(last)
                    self.spool.ack(last)
                    self.acked = last
                    self._telemetry_counts = message.registered.telemetry_counts_as_heartbeat
                    self._last_beat, self._batch_this_period = None, False
                    self.registered = self.session_registered = True
                    if self.dialled_at is not None:
                        self.register_seconds.append(time.monotonic() - self.dialled_at)
                        self.dialled_at = None
                    sender = asyncio.create_task(self._send(call, last))
        finally:
            self.registered = False
            self._beat = None
            if sender is not None:
                sender.cancel()
            if not call.done():
                call.cancel()
            if not self.session_registered:
                del self._connect[address]
                await self._channels.pop(address).close()

    async def _send(self, call: Any, sent: int) -> None:
        """Heartbeats, and what waits in the spool after ``sent`` (the seq the server said
        it holds) in seq order within the send window, whenever one is made or acked.
        Ends quietly with the stream (its reader sees how)."""
        wake = self._wake
        try:
            while True:
                wake.clear()
                beat, self._beat = self._beat, None
                if beat is not None:
                    hb = beat.heartbeat
                    self._last_beat = (hb.program_sha256, hb.health, hb.shadow_sha256)
                    self.beats += 1
                    await call.write(beat)
                room = SEND_WINDOW - (sent - self.acked)
                if room > 0:
                    for message in self.spool.pending(sent, room):
                        seq = message.telemetry.seq
                        self.sent_at[seq] = time.monotonic()
                        await call.write(message)
                        sent = seq
                        self._batch_this_period = True
                if not wake.is_set():
                    await wake.wait()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            return  # the stream ended


async def tick_agents(agents: list[AioAgent], period_s: float, stop: asyncio.Event) -> None:
    """Every agent's period on one timer: each agent ticks at its phase of every
    period, at a fixed rate however late a round was, until ``stop``."""
    loop = asyncio.get_running_loop()
    order = sorted(agents, key=lambda agent: agent.phase_s)
    period_ms = int(period_s * 1000)
    start, round_, i = loop.time(), 0, 0
    while not stop.is_set():
        base = start + round_ * period_s
        now = loop.time()
        now_ms = int(time.time() * 1000)
        beat = fleet_pb2.AgentMessage(
            heartbeat=fleet_pb2.Heartbeat(unix_ms=now_ms, program_sha256=SHA, health="ok")
        )
        content = (SHA, "ok", "")
        while i < len(order) and base + order[i].phase_s <= now:
            order[i].tick(now_ms, period_ms, beat, content)
            i += 1
        if i == len(order):
            round_, i = round_ + 1, 0
            continue
        await asyncio.sleep(max(TICK_S, base + order[i].phase_s - loop.time()))


async def run_agents(
    addresses: list[str],
    first: int,
    count: int,
    seconds: float,
    interval_s: float,
    dial_per_s: float,
) -> None:
    """Start ``count`` agents (``dial_per_s`` a second), then print one JSON report a
    second. A line "drain" on stdin stops making batches; once every spool is empty (or
    after DRAIN_S) a last report says how many batches were made and still wait."""
    agents = [
        AioAgent(addresses, f"sim-{first + i:04d}", random.uniform(0, interval_s))
        for i in range(count)
    ]
    drain = asyncio.Event()
    ticker = asyncio.create_task(tick_agents(agents, interval_s, drain))
    tasks = []
    step = max(1, round(dial_per_s / 20))  # agents per 50 ms
    for i, agent in enumerate(agents):
        tasks.append(asyncio.create_task(agent.run()))
        if i % step == step - 1:
            await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "drain":
                loop.call_soon_threadsafe(drain.set)

    threading.Thread(target=read_stdin, daemon=True).start()
    deadline = time.monotonic() + seconds
    drained_by: float | None = None
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drain.wait(), 1.0)
        if drain.is_set() and drained_by is None:
            drained_by = time.monotonic() + DRAIN_S
        latencies = sorted(s for agent in agents for s in agent.ack_seconds)
        for agent in agents:
            agent.ack_seconds.clear()
        waiting = sum(len(agent.spool.waiting) for agent in agents)
        registering = sorted(s for agent in agents for s in agent.register_seconds)
        for agent in agents:
            agent.register_seconds.clear()
        report: dict[str, Any] = {
            "registered": sum(agent.registered for agent in agents),
            # agents in a session the server has not answered Registered yet; the
            # others that are not registered wait out their backoff
            "dialling": sum(agent.dialled_at is not None for agent in agents),
            "registrations": len(registering),
            "register_max_s": registering[-1] if registering else 0.0,
            "sent": sum(agent.made for agent in agents),
            "acked": sum(agent.acked for agent in agents),
            "heartbeats": sum(agent.beats for agent in agents),
            "acks": len(latencies),
            "acks_over_1s": sum(s > 1.0 for s in latencies),
            "ack_p50_s": latencies[len(latencies) // 2] if latencies else 0.0,
            "ack_p99_s": latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0,
            "ack_max_s": latencies[-1] if latencies else 0.0,
            "failed": sum(task.done() for task in tasks),
            "spooled": waiting,
            "stream_ends": dict(STREAM_ENDS),
            "stream_details": STREAM_DETAILS,
            "last_stream_end": Failovers.last_end,
            "last_redial": Failovers.last_redial,
            "redials_pending": Failovers.pending,
            "cpu_s": time.process_time(),
        }
        if drained_by is not None and (waiting == 0 or time.monotonic() > drained_by):
            report["final"] = True
            # per agent, how many batches it let go of (made and no longer waiting: the
            # server acked them); they are numbered 1.. in ``frames``
            report["released"] = {a.agent_id: a.made - len(a.spool.waiting) for a in agents}
            print(json.dumps(report), flush=True)
            await asyncio.Event().wait()  # the parent ends this process
        print(json.dumps(report), flush=True)
    ticker.cancel()
    for task in tasks:
        task.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    rollout = sub.add_parser("rollout", help="time a canary + waves rollout")
    rollout.add_argument("--agents", type=int, default=100)
    rollout.add_argument("--bake", type=float, default=2.0, help="seconds per phase")
    ingest = sub.add_parser("ingest", help="many agents sending telemetry every second")
    ingest.add_argument("--agents", type=int, default=1000)
    ingest.add_argument("--duration", type=float, default=30.0)
    ingest.add_argument(
        "--generators", type=int, default=1, help="load-generator processes the agents share"
    )
    ingest.add_argument("--interval", type=float, default=1.0, help="telemetry period, s")
    ingest.add_argument("--replicas", type=int, default=1, help="server processes")
    ingest.add_argument(
        "--database",
        default="",
        help="PostgreSQL URL the replicas share, or 'throwaway' for a temporary cluster "
        "(default: SQLite, one server)",
    )
    ingest.add_argument(
        "--kill-one-at", type=float, default=0.0, help="SIGKILL a replica this many s in"
    )
    ingest.add_argument(
        "--listeners",
        type=int,
        default=0,
        help="gRPC listeners per replica (the server's listeners setting; 0: its default)",
    )
    ingest.add_argument(
        "--generator-nice",
        type=int,
        default=0,
        help="run the load generators at this nice value (they stand in for devices "
        "elsewhere; 0: the same priority as the servers, the issue's setting)",
    )
    ingest.add_argument(
        "--dial-per-s",
        type=float,
        default=1000.0,
        help="new connections a second while the agents start (all generators together)",
    )
    agents = sub.add_parser("agents", help="(internal) the load generator ingest starts")
    agents.add_argument("--address", required=True)
    agents.add_argument("--first", type=int, default=0)
    agents.add_argument("--count", type=int, required=True)
    agents.add_argument("--seconds", type=float, required=True)
    agents.add_argument("--interval", type=float, default=1.0)
    agents.add_argument("--dial-per-s", type=float, default=1000.0)
    args = parser.parse_args()
    if args.what == "agents":
        addresses = args.address.split(",")
        # as the server does (spikefleet_server.cli): thousands of agents' objects live
        # for seconds, and default thresholds walked the whole heap every few seconds
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 20)
        asyncio.run(
            run_agents(
                addresses, args.first, args.count, args.seconds, args.interval, args.dial_per_s
            )
        )
        return 0
    # the registry's own log lines (keys.created, registry.stored) on stderr, so that
    # stdout is the JSON report alone
    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))
    with (
        tempfile.TemporaryDirectory(prefix="spikefleet-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        if args.what == "rollout":
            result = bench_rollout(Path(tmp), args.agents, args.bake)
        else:
            database, database_pid = args.database, 0
            if args.replicas > 1 and not database:
                raise SystemExit("--replicas > 1 needs --database (a PostgreSQL URL or throwaway)")
            if database == "throwaway":
                from support.postgres import running_cluster

                cluster = stack.enter_context(running_cluster())
                database = cluster.create_database("bench")
                pid_file = cluster.data_dir / "postmaster.pid"
                database_pid = int(pid_file.read_text().split()[0])
            result = bench_ingest(
                Path(tmp),
                args.agents,
                args.duration,
                args.generators,
                interval_s=args.interval,
                replicas=args.replicas,
                database=database,
                kill_one_at_s=args.kill_one_at,
                database_pid=database_pid,
                dial_per_s=args.dial_per_s,
                listeners=args.listeners,
                generator_nice=args.generator_nice,
            )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
