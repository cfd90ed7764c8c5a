"""spikefleet-server on loopback: conversion round trip, program fetch, upload, store.

Run: .venv/bin/python benchmarks/server.py

One in-process server (plaintext loopback, one conversion worker) on a 2-core
machine; the model is the reference topology with seeded weights and 32
calibration frames. The local anchor is ``spikefleet.convert.convert`` on the
same inputs in this process, measured in the same run.
"""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import structlog
from support.aio import Blocking
from support.models import REFERENCE_ARCH, reference_state_dict
from support.server import serving

from spikefleet.client import Client
from spikefleet.convert import ConvertOptions, convert
from spikefleet.errors import InvalidRequestError
from spikefleet_server.config import hash_token, load_config

TOKEN = "bench-token"


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    root = Path(tempfile.mkdtemp())
    reference = reference_state_dict(root)
    path, frames, labels = reference.weights, reference.frames, reference.labels
    config = load_config(
        None,
        environ={},
        overrides={
            "listen": "127.0.0.1:0",
            "data_dir": root / "data",
            "insecure_loopback": True,
            "max_upload_bytes": 64 << 20,
            "extensions": [],
            "log_level": "warning",
            "tokens": [{"name": "bench", "role": "admin", "sha256": hash_token(TOKEN)}],
        },
    )
    rows: list[tuple[str, str]] = []
    local: list[float] = []
    for _ in range(5):
        started = time.perf_counter()
        convert(
            path, arch=REFERENCE_ARCH, calibration=frames, labels=labels, options=ConvertOptions()
        )
        local.append(time.perf_counter() - started)
    rows.append(
        (
            "local convert() (reference topology, 32 calibration frames)",
            f"{median_ms(local):.0f} ms",
        )
    )

    with serving(config) as running, Client(running.address, token=TOKEN) as client:
        app = Blocking(running.app, running.call)
        started = time.perf_counter()
        client.convert(
            path, arch=REFERENCE_ARCH, name="warm-up", calibration=frames, calibration_labels=labels
        )
        rows.append(
            (
                "first remote convert (spawns the worker)",
                f"{(time.perf_counter() - started) * 1000:.0f} ms",
            )
        )
        remote: list[float] = []
        for i in range(5):
            started = time.perf_counter()
            info = client.convert(
                path,
                arch=REFERENCE_ARCH,
                name=f"bench-{i}",
                calibration=frames,
                calibration_labels=labels,
                labels={"run": str(i)},
            )
            remote.append(time.perf_counter() - started)
        rows.append(("remote convert: upload, convert, sign, store", f"{median_ms(remote):.0f} ms"))

        gets: list[float] = []
        for _ in range(200):
            started = time.perf_counter()
            data = client.programs.get(info.sha256)
            gets.append(time.perf_counter() - started)
        rows.append(
            (f"programs.get of a {len(data):,}-byte signed program", f"{median_ms(gets):.2f} ms")
        )

        blob = root / "blob.safetensors"
        blob.write_bytes(np.random.default_rng(1).bytes(32 << 20))
        uploads: list[float] = []
        for _ in range(3):
            started = time.perf_counter()
            with contextlib.suppress(InvalidRequestError):  # refused once fully received
                client.convert(blob, arch=REFERENCE_ARCH, name="blob")
            uploads.append(time.perf_counter() - started)
        rate = 32 / statistics.median(uploads)
        rows.append(("upload of 32 MiB, then refused as not a model", f"{rate:.0f} MiB/s"))

        puts: list[float] = []
        program = data
        for i in range(50):
            payload = program + i.to_bytes(4, "little")
            started = time.perf_counter()
            app.registry.put(payload, name="puts")
            puts.append(time.perf_counter() - started)
        rows.append(
            ("registry.put (sign, write+fsync+rename, SQLite commit)", f"{median_ms(puts):.2f} ms")
        )
        sha = hashlib.sha256(payload).hexdigest()
        assert app.registry.describe(sha).version == 50

    width = max(len(what) for what, _ in rows)
    for what, value in rows:
        print(f"| {what.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
