"""How fast a busy grpc.aio server takes up new calls, with 1 or several listeners.

    .venv/bin/python benchmarks/grpc_accept.py --calls 1000 --pass-ms 2 --listeners 1,2,4,8

grpc.aio's server keeps one request for a new call outstanding per method and takes
up the next only after several passes of its event loop (the request's task runs, its
completion comes back through gRPC's poller thread, the future resolves, the accept
loop wakes and asks again). On a loop whose every pass takes milliseconds (a server
busy with thousands of agents' streams) that bounds how many new calls a second it
takes up, however many wait. Several servers in the process, on one port
(SO_REUSEPORT, as ``spikefleet-server``'s ``listeners`` setting does), each keep a
request outstanding.

Each run: a server process whose loop passes are made ``--pass-ms`` longer (a task
that burns that long each pass), with K servers bound to one port; a client process
that connects ``--calls`` channels first, then starts one stream on each at once and
waits for every first answer. Reports calls answered a second, loop passes per call,
and the ratio to the first ``--listeners`` value (the anchor, run in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import grpc

SERVICE, METHOD = "bench.Accept", "Connect"


def _burn(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


async def serve(listeners: int, pass_ms: float) -> None:
    """K servers on one port; prints the port, then on "report" the counts so far."""
    answered = passes = 0

    async def connect(requests: object, context: grpc.aio.ServicerContext) -> object:
        nonlocal answered
        async for _ in requests:  # type: ignore[attr-defined]
            answered += 1
            yield b"ok"

    handlers = {METHOD: grpc.stream_stream_rpc_method_handler(connect)}
    options = [("grpc.so_reuseport", 1), ("grpc.server.max_pending_requests", 20_000)]
    servers, port = [], 0
    for _ in range(listeners):
        server = grpc.aio.server(options=options)
        server.add_registered_method_handlers(SERVICE, handlers)
        port = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        servers.append(server)

    async def slow_passes() -> None:
        nonlocal passes
        while True:
            passes += 1
            _burn(pass_ms)
            await asyncio.sleep(0)

    loop = asyncio.get_running_loop()
    reports: asyncio.Queue[str] = asyncio.Queue()
    loop.add_reader(sys.stdin.fileno(), lambda: reports.put_nowait(sys.stdin.readline()))
    print(json.dumps({"port": port}), flush=True)
    while (await reports.get()).strip() == "start":
        base_answered, base_passes = answered, passes
        burner = asyncio.ensure_future(slow_passes())
        await reports.get()  # "report"
        burner.cancel()
        print(json.dumps({"answered": answered - base_answered, "passes": passes - base_passes}))
        sys.stdout.flush()
    for server in servers:
        await server.stop(None)


async def dial(port: int, calls: int) -> None:
    """``calls`` connections first, then one stream on each at once; prints the time from
    the start until each first answer."""
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(calls)
    ]
    await asyncio.gather(*(channel.channel_ready() for channel in channels))
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()

    async def one(channel: grpc.aio.Channel) -> float:
        call = channel.stream_stream(f"/{SERVICE}/{METHOD}")()
        await call.write(b"x")
        await call.read()
        return time.monotonic() - started

    answers = await asyncio.gather(*(one(channel) for channel in channels))
    print(json.dumps({"seconds": sorted(answers)}), flush=True)
    os._exit(0)  # the streams stay open until the process ends


def run(listeners: int, calls: int, pass_ms: float) -> dict[str, float]:
    me = [sys.executable, __file__]
    server = subprocess.Popen(
        [*me, "serve", "--listeners", str(listeners), "--pass-ms", str(pass_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        port = json.loads(server.stdout.readline())["port"]
        client = subprocess.Popen(
            [*me, "dial", "--port", str(port), "--calls", str(calls)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdin is not None and client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        server.stdin.write("start\n")
        server.stdin.flush()
        client.stdin.write("go\n")
        client.stdin.flush()
        seconds = json.loads(client.stdout.readline())["seconds"]
        client.wait(timeout=60)
        server.stdin.write("report\n")
        server.stdin.flush()
        counts = json.loads(server.stdout.readline())
    finally:
        server.kill()
        server.wait(timeout=60)
    last = seconds[-1]
    return {
        "listeners": listeners,
        "calls": calls,
        "all_answered_s": round(last, 2),
        "half_answered_s": round(seconds[len(seconds) // 2], 2),
        "calls_per_s": round(calls / last, 1),
        "loop_passes_per_s": round(counts["passes"] / last),
        "loop_passes_per_call": round(counts["passes"] / max(1, counts["answered"]), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what")
    server = sub.add_parser("serve", help="(internal) the server process")
    server.add_argument("--listeners", type=int, required=True)
    server.add_argument("--pass-ms", type=float, required=True)
    client = sub.add_parser("dial", help="(internal) the client process")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--calls", type=int, required=True)
    parser.add_argument("--calls", type=int, default=1000, help="new calls started at once")
    parser.add_argument(
        "--pass-ms", type=float, default=2.0, help="how much longer each loop pass is made"
    )
    parser.add_argument(
        "--listeners", default="1,4", help="listener counts to run, the first is the anchor"
    )
    parser.add_argument("--repeat", type=int, default=2, help="alternated runs of each")
    args = parser.parse_args()
    if args.what == "serve":
        asyncio.run(serve(args.listeners, args.pass_ms))
        return 0
    if args.what == "dial":
        asyncio.run(dial(args.port, args.calls))
        return 0
    counts = [int(n) for n in args.listeners.split(",")]
    results: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    for _ in range(args.repeat):
        for n in counts:
            result = run(n, args.calls, args.pass_ms)
            print(json.dumps(result), file=sys.stderr)
            results[n].append(result)
    anchor = sum(r["calls_per_s"] for r in results[counts[0]]) / args.repeat
    summary = []
    for n in counts:
        rate = sum(r["calls_per_s"] for r in results[n]) / args.repeat
        summary.append(
            {
                "listeners": n,
                "calls_per_s": round(rate, 1),
                "ratio_to_anchor": round(rate / anchor, 2),
                "loop_passes_per_call": [r["loop_passes_per_call"] for r in results[n]],
                "all_answered_s": [r["all_answered_s"] for r in results[n]],
            }
        )
    print(
        json.dumps(
            {
                "calls": args.calls,
                "pass_ms": args.pass_ms,
                "anchor_listeners": counts[0],
                "runs": summary,
                "machine_load_average_1m": os.getloadavg()[0],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
