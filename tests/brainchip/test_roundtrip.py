"""export-akida then import-akida keeps what the host needs: output scales, labels, the
input spec, the name; the imported program answers exactly as the exported one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spikefleet.brainchip import fbz_bytes, load_fbz
from spikefleet.brainchip.fbz import split_trailer
from spikefleet.cli.main import main
from spikefleet.convert import ConvertOptions, convert
from spikefleet.convert.graph import Graph, Leaky, Linear
from spikefleet.engine import Engine
from spikefleet.errors import ProgramFormatError
from spikefleet.events.spec import default_input_spec
from spikefleet.program.files import load_program, save_program


def fc_program():
    """A converted FC net whose read-out has per-class scales and a bias."""
    rng = np.random.default_rng(0)
    graph = Graph(
        input_shape=(2, 8, 8),
        nodes=[
            Linear("fc1", rng.normal(0, 0.2, (32, 128)).astype(np.float32)),
            Leaky("lif1", np.float32(0.5), np.float32(0.0)),
            Linear(
                "fc2",
                (rng.normal(0, 0.3, (10, 32)) * np.linspace(0.2, 2, 10)[:, None]).astype(
                    np.float32
                ),
                rng.normal(0, 0.5, 10).astype(np.float32),
            ),
            Leaky("lif2", np.float32(1.0), np.float32(0.0)),
        ],
    )
    options = ConvertOptions(hardware=False, class_names=[f"digit {i}" for i in range(10)])
    program = convert(graph, options=options).program
    program.input_spec = replace(default_input_spec((8, 8, 2), 4))
    return program


def test_export_then_import_keeps_scales_labels_spec_and_answers(tmp_path: Path) -> None:
    program = fc_program()
    assert program.output_scales is not None and len(set(program.output_scales)) > 1
    save_program(tmp_path / "p.sfp", program)
    fbz = tmp_path / "m.fbz"
    assert main(["export-akida", str(tmp_path / "p.sfp"), "-o", str(fbz)]) == 0
    assert main(["import-akida", str(fbz), "-o", str(tmp_path / "back.sfp")]) == 0
    back = load_program(tmp_path / "back.sfp")
    assert back.name == program.name and back.labels == program.labels
    np.testing.assert_array_equal(back.output_scales, program.output_scales)
    assert back.input_spec == program.input_spec
    frames = np.random.default_rng(1).integers(0, 16, (64, 8, 8, 2)).astype(np.uint8)
    before = Engine(program).run(frames).outputs.reshape(64, -1) * program.output_scales
    after = Engine(back).run(frames).outputs.reshape(64, -1) * back.output_scales
    np.testing.assert_array_equal(after, before)
    assert len(set(before.argmax(1))) > 2  # the answers vary, so the check means something


def test_akida_reads_the_file_with_its_trailer_and_computes_the_same(tmp_path: Path) -> None:
    import akida

    program = fc_program()
    data = fbz_bytes(program)
    plain, meta = split_trailer(data)
    assert meta is not None and meta["labels"] == program.labels
    (tmp_path / "with.fbz").write_bytes(data)
    (tmp_path / "plain.fbz").write_bytes(plain)
    frames = np.random.default_rng(2).integers(0, 16, (8, 8, 8, 2)).astype(np.uint8)
    with_trailer = akida.Model(str(tmp_path / "with.fbz")).forward(frames)
    np.testing.assert_array_equal(
        with_trailer, akida.Model(str(tmp_path / "plain.fbz")).forward(frames)
    )
    assert load_fbz(tmp_path / "plain.fbz").output_scales is None  # akida's own file: no trailer


def test_a_corrupt_trailer_is_a_clear_error(tmp_path: Path) -> None:
    data = fbz_bytes(fc_program())
    broken = data[:-20] + b"\xff" * 8 + data[-12:]
    (tmp_path / "bad.fbz").write_bytes(broken)
    with pytest.raises(ProgramFormatError, match="trailer"):
        load_fbz(tmp_path / "bad.fbz")
