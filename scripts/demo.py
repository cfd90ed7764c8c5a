"""The main job, end to end on loopback: N-DIGITS, conversion through the server,
a rollout to three sim agents, the test set streamed through them, one table.

Real processes throughout: one ``spikefleet-server`` and three
``spikefleet-agent`` daemons, talking gRPC on 127.0.0.1; state lives in
``var/demo`` (recreated each run). Run with ``make demo``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from spikefleet.client import Client
from spikefleet.client.agent import AgentClient
from spikefleet.client.rollouts import RolloutRequest
from spikefleet.datasets import ndigits
from spikefleet.errors import SpikefleetError

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WEIGHTS = ROOT / "client" / "spikefleet" / "reference" / "ndigits_reference.safetensors"
# The shipped network (spikefleet.reference.model): conv1 padded as Akida pads.
ARCH = "Input(34,34,2) Pad(0,1,0,1) Conv(32,3,s2,p0) Leaky Conv(64,3,s2) Leaky FC(10) Leaky"
AGENTS = 3
console = Console(stderr=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step(message: str) -> None:
    console.print(f"[bold cyan]==>[/] {message}")


def token(name: str, role: str, config: Path) -> str:
    done = subprocess.run(
        [BIN / "spikefleet-server", "token", "create", "--name", name, "--role", role],
        check=True,
        capture_output=True,
        text=True,
    )
    with config.open("a") as handle:
        handle.write(done.stderr)
    return done.stdout.strip()


@contextmanager
def daemons() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started inside are stopped with SIGTERM (then SIGKILL) on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except SpikefleetError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {what} did not come up within {timeout:.0f} s")
        time.sleep(0.2)


def float_accuracy(samples: list[ndigits.Sample]) -> float:
    import torch

    from spikefleet.reference import load_reference_model
    from spikefleet.reference.model import frames_to_input

    model = load_reference_model()
    frames = np.stack([ndigits.sample_frames(s.events) for s in samples])
    with torch.no_grad():
        scores = model(frames_to_input(frames.reshape(-1, *frames.shape[2:])))
    per_sample = scores.numpy().reshape(len(samples), frames.shape[1], -1).sum(axis=1)
    labels = np.array([s.label for s in samples])
    return float((per_sample.argmax(axis=1) == labels).mean())


def offline_answers(program_bytes: bytes, keys: Path, samples: list[ndigits.Sample]) -> np.ndarray:
    """Each recording's class from the engine, offline: frames made by the program's own
    input spec, answered by its decision rule (what the agents must reproduce live)."""
    from spikefleet.engine import Engine
    from spikefleet.events.binning import spec_frames
    from spikefleet.events.decision import class_scores, decide
    from spikefleet.program.codec import decode
    from spikefleet.program.signing import SignedProgram, TrustedKeys, verify

    program = decode(verify(SignedProgram.from_bytes(program_bytes), TrustedKeys.load(keys)))
    engine = Engine(program)
    spec = program.effective_input_spec
    answers = []
    for sample in samples:
        outputs = engine.run(spec_frames(sample.events, spec)).outputs
        scores = class_scores(outputs, program.output_scales)
        answers.append(decide(scores, spec)[1])
    return np.array(answers)


def stream_share(
    address: str, samples: list[tuple[int, ndigits.Sample]], out: dict[int, tuple[int, float]]
) -> None:
    with AgentClient(address) as agent:
        for index, sample in samples:
            started = time.perf_counter()
            answer = None
            # the agent bins the events by the program's own input spec, as training did
            for prediction in agent.stream_events([sample.events], sample_id=str(index)):
                answer = prediction.sample or answer
            assert answer is not None, f"agent {address} gave no sample result"
            out[index] = (answer.predicted_class, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "demo")
    parser.add_argument("--data", type=Path, default=None, help="N-DIGITS root (default: cache)")
    parser.add_argument("--samples", type=int, default=0, help="test samples to stream (0: all)")
    args = parser.parse_args(argv)

    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = args.data or ndigits.default_root()

    if not (data / "index.json").exists():
        step(f"building N-DIGITS into {data} (once; cached)")
        ndigits.build(data)
    test = ndigits.load(data, split="test")
    if args.samples:
        test = test[: args.samples]
    labels = np.array([s.label for s in test])

    step("float SNNTorch accuracy on the test split")
    float_acc = float_accuracy(test)

    config = work / "server.toml"
    admin = token("demo", "admin", config)
    agent_token = token("agents", "agent", config)
    (work / "agent.token").write_text(agent_token + "\n")
    port = free_port()
    address = f"127.0.0.1:{port}"

    with daemons() as procs:
        step(f"starting spikefleet-server on {address}")
        procs.append(
            subprocess.Popen(
                [
                    BIN / "spikefleet-server",
                    "serve",
                    "--config",
                    config,
                    "--insecure-loopback",
                    "--listen",
                    address,
                    "--data-dir",
                    work / "server",
                    "--log-level",
                    "warning",
                ],
            )
        )
        with Client(address, token=admin) as client:
            wait_for("the server", lambda: client.programs.list() is not None)

            step("converting the reference model on the server (signed, stored)")
            calib_idx = np.random.default_rng(0).choice(len(test), min(64, len(test)), False)
            calib = np.stack([ndigits.sample_frames(test[i].events) for i in calib_idx])
            info = client.convert(
                WEIGHTS,
                name="ndigits_reference",
                arch=ARCH,
                calibration=calib,
                calibration_labels=labels[calib_idx],
                input_spec=ndigits.INPUT_SPEC,
                on_progress=lambda p: console.print(f"    {p.stage}: {p.fraction:.0%} {p.message}"),
            )
            keys = work / "keys"
            keys.mkdir()
            for key_id, pem in client.programs.trusted_keys().items():
                (keys / f"{key_id}.pub").write_bytes(pem)
            offline = offline_answers(client.programs.get(info.sha256), keys, test)

            step(f"starting {AGENTS} spikefleet-agent daemons (sim backend)")
            inference = []
            for n in range(AGENTS):
                home = work / f"agent-{n}"
                home.mkdir()
                inference.append(f"127.0.0.1:{free_port()}")
                (home / "agent.toml").write_text(
                    f'agent_id = "demo-{n}"\nstate_dir = "state"\nbackend = "sim"\n'
                    f'lock_dir = "lock"\ntrusted_keys = ["{keys}"]\n'
                    f'[labels]\nsite = "demo"\n'
                    f'[server]\naddress = "{address}"\ntoken_file = "{work / "agent.token"}"\n'
                    f'[inference]\naddress = "{inference[-1]}"\n'
                    f"[telemetry]\ninterval_s = 1.0\nmetrics_port = {free_port()}\n"
                )
                procs.append(
                    subprocess.Popen(
                        [
                            BIN / "spikefleet-agent",
                            "run",
                            "--config",
                            home / "agent.toml",
                            "--log-level",
                            "warning",
                        ],
                    )
                )
            wait_for("the agents", lambda: len(client.rollouts.agents({"site": "demo"})) == AGENTS)

            step(f"rolling {info.sha256[:12]} out: canary 1 agent, then the rest")
            rollout = client.rollouts.create(
                RolloutRequest(
                    program_sha256=info.sha256,
                    selector={"site": "demo"},
                    canary_count=1,
                    waves=(100.0,),
                    bake_s=1.0,
                )
            )
            for status in client.rollouts.watch(rollout.rollout_id):
                console.print(f"    {status.state}: {status.counts()}")
                if status.final:
                    break
            if status.state != "succeeded":
                raise SystemExit(f"demo: rollout ended {status.state}")

            step(f"streaming {len(test)} test recordings through the agents")
            results: dict[int, tuple[int, float]] = {}
            shares = [list(enumerate(test))[n::AGENTS] for n in range(AGENTS)]
            started = time.perf_counter()
            threads = [
                threading.Thread(target=stream_share, args=(inference[n], shares[n], results))
                for n in range(AGENTS)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            if len(results) != len(test):
                raise SystemExit(f"demo: {len(test) - len(results)} samples got no answer")

            predicted = np.array([results[i][0] for i in range(len(test))])
            latency_ms = np.array([results[i][1] for i in range(len(test))]) * 1e3
            time.sleep(2.0)  # one telemetry interval, so the server has the last batch
            fleet = client.rollouts.agents({"site": "demo"})
            statuses = []
            for addr in inference:
                with AgentClient(addr) as agent:
                    statuses.append(agent.status())

    int4_acc = float((predicted == labels).mean())
    offline_acc = float((offline == labels).mean())
    agree = int((predicted == offline).sum())
    frames = len(test) * 3
    out = Console()
    summary = Table(title="spikefleet demo: N-DIGITS test split through 3 sim agents")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("test recordings", str(len(test)))
    summary.add_row("float SNNTorch accuracy", f"{float_acc:.2%}")
    summary.add_row("int4 program accuracy (agents)", f"{int4_acc:.2%}")
    summary.add_row("int4 program accuracy (offline engine)", f"{offline_acc:.2%}")
    summary.add_row("live answers equal offline", f"{agree} of {len(test)}")
    summary.add_row("program", f"{info.name} v{info.version} {info.sha256[:12]}")
    summary.add_row("frames/s (3 agents, events in)", f"{frames / elapsed:,.0f}")
    summary.add_row("latency per recording p50", f"{np.percentile(latency_ms, 50):.2f} ms")
    summary.add_row("latency per recording p99", f"{np.percentile(latency_ms, 99):.2f} ms")
    out.print(summary)

    per_agent = Table(title="per agent (agent status and server's fleet view)")
    for column in ("agent", "backend", "program", "frames", "spooled", "server sees"):
        per_agent.add_column(column)
    seen = {a.agent_id: a for a in fleet}
    for st in statuses:
        record = seen.get(st.agent_id)
        per_agent.add_row(
            st.agent_id,
            st.backend,
            st.program_sha256[:12],
            str(st.frames),
            str(st.spooled_batches),
            "connected" if record is not None else "missing",
        )
    out.print(per_agent)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
