"""The load generator's CPU per agent failover, measured alone, against an anchor.

    .venv/bin/python benchmarks/fleet_failover.py --agents 2000 --rounds 4
    git show 69a0c48:benchmarks/fleet.py > /tmp/fleet_anchor.py
    .venv/bin/python benchmarks/fleet_failover.py --anchor /tmp/fleet_anchor.py --pairs 2

In a kill run (``fleet.py ingest --kill-one-at``) the load generators share the
machine's two cores with the servers, so what it costs them to notice the dead streams,
back off and redial counts against the failover time, though real devices each have a
CPU of their own. This measures that cost alone: ``--agents`` agents of fleet.py's load
generator (``AioAgent``: own connection, the real control protocol and failover
backoff) in one process with no telemetry, over two ``spikefleet-server`` processes
(each on its own SQLite file: here agents only register). It SIGKILLs one, waits until
every agent wrote its Register on a new stream and is registered again, restarts it,
kills the other, ..., ``--rounds`` kills (from the second on every agent fails over).
Per failover: the process's CPU (all threads, ``time.process_time``) from the kill until
all were back, split into the event loop's thread (asyncio and grpc.aio's Python) and
the others (gRPC's event-engine and completion-queue threads); and the TCP connects
the machine made in the 2 s after (a channel redialling a dead address would show).

``--anchor FILE``: another version of fleet.py (its ``AioAgent`` and ``Server``; from
69a0c48 on, which counts failovers),
alternated with this tree's ``--pairs`` times, each run in its own process; the report
gives each run's median per failover and this tree's over the anchor's. The machine's
other load changes these figures by 10-20%: compare alternated runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog

HERE = Path(__file__).resolve()
FLEET = HERE.parent / "fleet.py"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleet_under_test", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python module; give a copy of benchmarks/fleet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fleet_under_test"] = module
    spec.loader.exec_module(module)
    return module


def _tcp() -> dict[str, int]:
    """The machine's TCP connects so far (all processes): ActiveOpens, AttemptFails."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = (row for row in rows if row[0] == "Tcp:")
    return {
        name: int(value)
        for name, value in zip(names[1:], values[1:], strict=True)
        if name in ("ActiveOpens", "AttemptFails")
    }


def _drain(process: subprocess.Popen[str]) -> None:
    assert process.stderr is not None
    for _ in process.stderr:
        pass


def _start(argv: list[str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "listening on port" in line:
            break
    else:
        raise SystemExit(f"{argv[0]} ended before listening")
    threading.Thread(target=_drain, args=(process,), daemon=True).start()
    return process


async def _measure(fleet: Any, server: Any, root: Path, count: int, rounds: int) -> list[Any]:
    failovers = fleet.Failovers
    agents = [fleet.AioAgent(server.addresses, f"ff-{i:05d}", 0.0) for i in range(count)]
    tasks = []
    for i, agent in enumerate(agents):
        tasks.append(asyncio.create_task(agent.run()))
        if i % 50 == 49:  # as fleet.py's generator dials: 1,000 a second
            await asyncio.sleep(0.05)
    started = time.monotonic()
    while sum(agent.registered for agent in agents) < count:
        if time.monotonic() - started > 120:
            raise SystemExit(f"only {sum(a.registered for a in agents)} of {count} registered")
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)
    results = []
    for round_ in range(rounds):
        victim = round_ % 2
        address = server.addresses[victim]
        affected = sum(a.registered and a.addresses[a.index] == address for a in agents)
        main0, all0, t0 = time.thread_time(), time.process_time(), time.monotonic()
        server.processes[victim].kill()
        server.processes[victim].wait()
        while not (
            failovers.pending == 0
            and failovers.last_redial > t0
            and sum(agent.registered for agent in agents) == count
        ):
            if time.monotonic() - t0 > 120:
                raise SystemExit("the agents did not all come back within 120 s")
            await asyncio.sleep(0.05)
        back = time.monotonic() - t0
        main, total = time.thread_time() - main0, time.process_time() - all0
        tcp0 = _tcp()
        await asyncio.sleep(2.0)  # nothing dials a dead address meanwhile
        tcp1 = _tcp()
        per = 1000 / max(affected, 1)
        results.append(
            {
                "failovers": affected,
                "redialled_s": round(failovers.last_redial - t0, 2),
                "all_back_s": round(back, 2),
                "cpu_ms_per_failover": round(per * total, 3),
                "loop_thread_ms": round(per * main, 3),
                "other_threads_ms": round(per * (total - main), 3),
                "tcp_in_2s_after": {name: tcp1[name] - tcp0[name] for name in tcp0},
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        config = root / f"server-{victim}.toml"  # as fleet.Server wrote it
        argv = [str(fleet.BIN / "spikefleet-server"), "serve", "--config", str(config)]
        server.processes[victim] = _start(argv)
        await asyncio.sleep(2.0)
    for task in tasks:
        task.cancel()
    return results


def run_one(path: Path, count: int, rounds: int) -> dict[str, Any]:
    """One measurement in this process with ``path``'s load generator."""
    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))
    fleet = _load(path)
    if not hasattr(fleet, "Failovers"):
        raise SystemExit(f"{path}: a fleet.py from before 69a0c48 (it counts no failovers)")
    with tempfile.TemporaryDirectory(prefix="spikefleet-failover-") as tmp:
        root = Path(tmp)
        server = fleet.Server(root, grpc_threads=16, replicas=2)  # it reads their logs
        # as fleet.py's generator process does
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 20)
        try:
            results = asyncio.run(_measure(fleet, server, root, count, rounds))
        finally:
            for process in server.processes:
                process.kill()
                process.wait()
    costs = [r["cpu_ms_per_failover"] for r in results]
    return {
        "fleet": str(path),
        "agents": count,
        "median_cpu_ms_per_failover": statistics.median(costs),
        "rounds": results,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _child(path: Path, count: int, rounds: int) -> dict[str, Any]:
    argv = [sys.executable, str(HERE), "--run", str(path), "--agents", str(count)]
    done = subprocess.run(
        [*argv, "--rounds", str(rounds)], stdout=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the measurement with {path} failed (exit {done.returncode})")
    # the report is the last line (the servers' set-up may log to stdout before it)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4, help="kills per run")
    parser.add_argument("--anchor", type=Path, help="another fleet.py to compare with")
    parser.add_argument("--pairs", type=int, default=2, help="alternated runs of each")
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # (internal) one run
    args = parser.parse_args()
    if args.agents < 2 or args.rounds < 1 or args.pairs < 1:
        parser.error("--agents must be at least 2, --rounds and --pairs at least 1")
    if args.anchor is not None and not args.anchor.is_file():
        parser.error(f"--anchor {args.anchor}: no such file (a copy of benchmarks/fleet.py)")
    if args.run is not None:
        print(json.dumps(run_one(args.run, args.agents, args.rounds)))
        return 0
    if args.anchor is None:
        print(json.dumps(_child(FLEET, args.agents, args.rounds), indent=2))
        return 0
    runs: list[dict[str, Any]] = []
    for _ in range(args.pairs):
        for path in (FLEET, args.anchor):
            runs.append(_child(path, args.agents, args.rounds))
    mine = [r["median_cpu_ms_per_failover"] for r in runs if r["fleet"] == str(FLEET)]
    theirs = [r["median_cpu_ms_per_failover"] for r in runs if r["fleet"] != str(FLEET)]
    summary = {
        "runs": runs,
        "this_tree_ms": mine,
        "anchor_ms": theirs,
        "this_over_anchor": round(statistics.median(mine) / statistics.median(theirs), 3),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
