"""Converting prints nothing but its result: the library logs through ``logging``, the
CLI writes its table to stdout and keeps stderr for progress and errors."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from spikefleet.convert import convert

ARCH = "Input(8,8,2) FC(32) Leaky FC(10) Leaky"
CLI = str(Path(sys.executable).parent / "spikefleet")


def fc_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    save_file(
        {
            "fc1.weight": rng.normal(0, 0.3, (32, 128)).astype(np.float32),
            "fc1.bias": np.zeros(32, np.float32),
            "fc2.weight": rng.normal(0, 0.3, (10, 32)).astype(np.float32),
            "fc2.bias": np.zeros(10, np.float32),
        },
        str(path),
    )
    return path


def test_the_library_prints_nothing_and_logs_through_logging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = fc_model(tmp_path / "fc.safetensors")
    script = (
        "from spikefleet.convert import convert, ConvertOptions\n"
        f"convert({str(model)!r}, arch={ARCH!r}, options=ConvertOptions(hardware=False))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")

    with caplog.at_level(logging.INFO, logger="spikefleet"):
        result = convert(model, arch=ARCH)
    (record,) = [r for r in caplog.records if r.name.startswith("spikefleet.convert")]
    assert result.program.name in record.getMessage()


def test_the_cli_prints_its_table_on_stdout_and_nothing_else(tmp_path: Path) -> None:
    model = fc_model(tmp_path / "fc.safetensors")
    out = tmp_path / "fc.sfp"
    done = subprocess.run(
        [CLI, "convert", str(model), "--arch", ARCH, "-o", str(out), "--no-hardware"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # stderr is no terminal: no bar to draw, and no log lines
    lines = done.stdout.splitlines()
    assert lines[0].strip() == "converted fc" and not any(
        line.lstrip().startswith("{") or "convert.done" in line for line in lines
    )
    assert out.is_file()
    assert "input_spec=" not in done.stdout  # a note names the flag, not the argument


def test_printing_an_extracted_graph_shows_its_layers_not_its_weights() -> None:
    import torch

    import spikefleet
    from spikefleet.reference.model import ReferenceNet

    graph = spikefleet.extract(ReferenceNet(), torch.zeros(1, 2, 34, 34))
    text = repr(graph)
    assert len(text) < 2000 and "array(" not in text and "..." not in text
    assert "Conv2d(name='conv1', weight=float32[32,2,3,3]" in text
    assert "Linear(name='fc1', weight=float32[10,5184], bias=float32[10])" in text
    assert str(graph) == text


def test_a_refusal_names_the_argument_in_the_library_and_the_flag_on_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spikefleet.cli.main import main
    from spikefleet.errors import IncompatibleModelError

    model = fc_model(tmp_path / "fc.safetensors")
    leaky = "Input(8,8,2) FC(32) Leaky(threshold=1,beta=0.5) FC(10) Leaky"
    with pytest.raises(IncompatibleModelError) as info:
        convert(model, arch=leaky)
    assert "pass allow_beta=True" in str(info.value) and "--allow-beta" not in str(info.value)

    argv = ["convert", str(model), "--arch", leaky, "-o", str(tmp_path / "x.sfp")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "pass --allow-beta" in err and "allow_beta" not in err
    assert main([*argv, "--allow-beta", "--no-hardware"]) == 0
