"""Server CPU per telemetry batch (with its heartbeat and ack), against an anchor tree.

    .venv/bin/python benchmarks/fleet_cpu.py --anchor /tmp/anchor --database throwaway
    .venv/bin/python benchmarks/fleet_cpu.py --agents 1000 --interval 1   # SQLite, no anchor

Throughput benchmarks (``fleet.py ingest``) say whether a fleet keeps up, which
depends on everything else the machine runs. This one says what a message costs
the server, which changes little with load: one ``spikefleet-server serve``
(SQLite, or one replica on a throwaway PostgreSQL) and ``fleet.py``'s load
generator with ``--agents`` at ``--interval``; after they registered and a
warm-up, the server process's CPU (utime + stime from /proc, per thread) over
``--seconds`` divided by the batches stored meanwhile, split into the event
loop's thread, gRPC's I/O threads (``event_engine``) and the other threads
(storage, gRPC's completion-queue poller, LISTEN, liveness). Also the server's
CPU per Register (while the agents register, with what their first periods cost
meanwhile: use a long ``--interval`` to see Registers alone).

``--anchor DIR``: a source tree of another version (e.g. ``git archive``
of the commit before a change), whose server runs with
``PYTHONPATH=DIR/client:DIR/server:DIR/agent`` in the same venv, alternated
with this tree's ``--rounds`` times; the load generator is this tree's for both.
The report gives each run and this tree's median over the anchor's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fleet
import structlog

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads: the main one, gRPC's I/O threads, the rest."""
    out = {"loop": 0.0, "grpc_io": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            raw = (task / "stat").read_text()
            name = raw.split("(", 1)[1].rsplit(")", 1)[0]
            fields = raw.rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            kind = (
                "loop"
                if task.name == str(pid)
                else "grpc_io"
                if name.startswith("event_engine")
                else "other"
            )
            out[kind] += seconds
    return out


@contextlib.contextmanager
def server_tree(tree: Path | None) -> Any:
    """The server processes started meanwhile run ``tree``'s code (None: this tree's)."""
    before = os.environ.get("PYTHONPATH")
    if tree is not None:
        os.environ["PYTHONPATH"] = ":".join(
            str(tree / part) for part in ("client", "server", "agent")
        )
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def measure(
    tree: Path | None,
    database: str,
    agents: int,
    interval_s: float,
    seconds: float,
    warmup_s: float,
) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="spikefleet-cpu-")))
        with server_tree(tree):
            server = fleet.Server(tmp, grpc_threads=16, database=database)
        stack.callback(server.stop)
        return _measure(server, tree, agents, interval_s, seconds, warmup_s)


def _measure(
    server: fleet.Server,
    tree: Path | None,
    agents: int,
    interval_s: float,
    seconds: float,
    warmup_s: float,
) -> dict[str, Any]:
    pid = server.process.pid
    generator = fleet.Generator(server.addresses, 0, agents, 3600, interval_s, 1000.0)
    try:
        started = thread_cpu(pid)
        while fleet._next_report(generator)["registered"] < agents:
            pass
        registered = thread_cpu(pid)
        time.sleep(warmup_s)
        cpu0, stored0, t0 = thread_cpu(pid), server.stored_batches(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            fleet._next_report(generator)
        cpu1, stored1, t1 = thread_cpu(pid), server.stored_batches(), time.monotonic()
    finally:
        generator.process.terminate()
        generator.process.wait(timeout=60)
    stored = max(1, stored1 - stored0)
    per_batch = {k: round(1000 * (cpu1[k] - cpu0[k]) / stored, 3) for k in cpu0}
    return {
        "tree": str(tree) if tree is not None else "this",
        "stored_batches_per_s": round(stored / (t1 - t0), 1),
        "server_cpu_percent": round(100 * sum(cpu1[k] - cpu0[k] for k in cpu0) / (t1 - t0), 1),
        "cpu_ms_per_batch": round(sum(per_batch.values()), 3),
        "cpu_ms_per_batch_by_thread": per_batch,
        "register_cpu_ms": round(
            1000 * sum(registered[k] - started[k] for k in started) / agents, 2
        ),
        "register_cpu_ms_by_thread": {
            k: round(1000 * (registered[k] - started[k]) / agents, 2) for k in started
        },
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=5.0, help="telemetry period, s")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--database", default="", help="'throwaway' (PostgreSQL) or SQLite")
    parser.add_argument("--anchor", type=Path, help="source tree of the version to compare to")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    # the registry's log lines (keys.created, registry.stored) on stderr, as fleet.py
    # does, so that stdout is the JSON report alone
    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))
    trees: list[Path | None] = [args.anchor, None] if args.anchor else [None]
    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        database = args.database
        if database == "throwaway":
            from support.postgres import running_cluster

            cluster = stack.enter_context(running_cluster())
        for round_ in range(args.rounds):
            for tree in trees:
                if args.database == "throwaway":
                    database = cluster.create_database(f"cpu_{round_}_{len(runs)}")
                run = measure(tree, database, args.agents, args.interval, args.seconds, args.warmup)
                print(json.dumps(run), file=sys.stderr)
                runs.append(run)
    report: dict[str, Any] = {
        "agents": args.agents,
        "interval_s": args.interval,
        "database": "postgresql" if args.database else "sqlite",
        "runs": runs,
    }
    if args.anchor:
        for key in ("cpu_ms_per_batch", "register_cpu_ms"):
            this = statistics.median(r[key] for r in runs if r["tree"] == "this")
            anchor = statistics.median(r[key] for r in runs if r["tree"] != "this")
            report[f"{key}_ratio_to_anchor"] = round(this / anchor, 3)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
