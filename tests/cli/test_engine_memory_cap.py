"""A program is tiny on disk whatever its input: convert and inspect refuse one whose engine
would need more memory than the cap, naming the cap and how to raise it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from support.program_factory import huge_input_program

from spikefleet.errors import ProgramFormatError
from spikefleet.program.codec import decode, encode
from spikefleet.program.validate import validate

SPIKEFLEET = str(Path(sys.executable).parent / "spikefleet")
HUGE_ARCH = "Input(20000,20000,2) Conv(4,3,s2,p0) Leaky Conv(8,3,s2,p0) GAP Leaky FC(10) Leaky"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SPIKEFLEET, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_validate_refuses_a_program_over_the_cap_and_the_cap_can_be_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ProgramFormatError, match=r"engine memory, more than the cap of 2\.0 GiB"):
        validate(huge_input_program())
    with pytest.raises(ProgramFormatError, match="SPIKEFLEET_MAX_ENGINE_BYTES"):
        encode(huge_input_program())
    data = encode(huge_input_program(), max_engine_bytes=0)  # 0: no cap
    assert len(data) < 4096
    with pytest.raises(ProgramFormatError, match="cap"):
        decode(data)
    monkeypatch.setenv("SPIKEFLEET_MAX_ENGINE_BYTES", str(2**50))
    assert decode(data).name == "huge-input"


def test_convert_refuses_a_huge_input_naming_the_cap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = {
        "conv1.weight": rng.normal(0, 0.3, (4, 2, 3, 3)),
        "conv1.bias": np.zeros(4),
        "conv2.weight": rng.normal(0, 0.3, (8, 4, 3, 3)),
        "conv2.bias": np.zeros(8),
        "fc1.weight": rng.normal(0, 0.3, (10, 8)),
        "fc1.bias": np.zeros(10),
    }
    model = tmp_path / "huge.safetensors"
    save_file({k: v.astype(np.float32) for k, v in weights.items()}, str(model))
    result = run("convert", str(model), "--arch", HUGE_ARCH, "-o", str(tmp_path / "p.sfp"))
    assert result.returncode == 1
    assert "SPIKEFLEET_MAX_ENGINE_BYTES" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "p.sfp").exists()


def test_inspect_refuses_a_huge_program_file_unless_the_cap_is_raised(tmp_path: Path) -> None:
    path = tmp_path / "huge.sfp"
    path.write_bytes(encode(huge_input_program(), max_engine_bytes=0))
    refused = run("inspect", str(path))
    assert refused.returncode != 0
    assert "more than the cap" in refused.stderr and "Traceback" not in refused.stderr
    shown = run("inspect", str(path), env={"SPIKEFLEET_MAX_ENGINE_BYTES": "0"})
    assert shown.returncode == 0, shown.stderr
    assert "20000" in shown.stdout
