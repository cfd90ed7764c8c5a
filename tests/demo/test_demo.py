"""The README's main job runs end to end: real server, three real agents, one table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spikefleet.datasets import ndigits

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_streams_the_test_split_through_three_agents_and_prints_the_table(
    tmp_path: Path,
) -> None:
    data = tmp_path / "ndigits"
    ndigits.build(data, limit=60)
    done = subprocess.run(
        [
            sys.executable,
            ROOT / "scripts" / "demo.py",
            "--data",
            data,
            "--work",
            tmp_path / "work",
            "--samples",
            "9",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "int4 program accuracy (agents)" in done.stdout
    assert "test recordings" in done.stdout
    # live StreamEvents answers, binned by the program's own spec, equal the offline engine's
    assert "live answers equal offline" in done.stdout and "9 of 9" in done.stdout
    for agent in ("demo-0", "demo-1", "demo-2"):
        assert agent in done.stdout
    assert "missing" not in done.stdout
