"""``spikefleet run | import-akida | export-akida``, run as a user would run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import akida
import numpy as np
import pytest
from support.generated import random_frames, random_program
from support.program_factory import spiking_reference_program

from spikefleet.brainchip import to_akida
from spikefleet.cli.main import main
from spikefleet.program import Convolutional, InputData
from spikefleet.program import Program as SpikefleetProgram
from spikefleet.program.files import load_program, save_program
from spikefleet.program.model import Padding


def akida_made_model(seed: int) -> akida.Model:
    """An Akida 1.0 model built with akida's own API, the way BrainChip tools hand them out."""
    rng = np.random.default_rng(seed)
    model = akida.Model()
    model.add(akida.InputData((20, 18, 2), input_bits=4, name="events"))
    model.add(
        akida.Convolutional(
            kernel_size=(3, 3),
            filters=16,
            kernel_stride=(2, 2),
            weights_bits=4,
            act_bits=2,
            name="c1",
        )
    )
    model.add(
        akida.Convolutional(
            kernel_size=(3, 3),
            filters=24,
            weights_bits=2,
            act_bits=4,
            pool_type=akida.PoolType.Max,
            pool_size=(2, 2),
            pool_stride=(2, 2),
            name="c2",
        )
    )
    model.add(akida.FullyConnected(units=5, weights_bits=4, activation=False, name="head"))
    for layer, bits in zip(model.layers[1:], (4, 2, 4), strict=True):
        shape = layer.variables["weights"].shape
        top = 1 if bits == 2 else 7
        layer.variables["weights"] = rng.integers(-top, top + 1, shape).astype(np.int8)
        filters = shape[-1]
        layer.variables["threshold"] = rng.integers(-20, 60, filters).astype(np.int32)
        if "act_step" in layer.variables.names and layer.parameters.activation:
            layer.variables["act_step"] = rng.uniform(0.5, 8, filters).astype(np.float32)
    return model


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_import_akida_then_run_gives_exactly_akidas_forward(tmp_path: Path, seed: int) -> None:
    if seed == 0:
        model = akida_made_model(seed)
        frames = random_frames(seed, SpikefleetProgram("x", [InputData("i", (20, 18, 2), 4)]), 9)
    else:
        program = random_program(seed)
        model = to_akida(program)
        frames = random_frames(seed, program, 9)
    fbz = tmp_path / "model.fbz"
    model.save(str(fbz))
    np.save(tmp_path / "in.npy", frames)
    assert main(["import-akida", str(fbz), "-o", str(tmp_path / "p.sfp")]) == 0
    assert (
        main(
            [
                "run",
                str(tmp_path / "p.sfp"),
                "--frames",
                str(tmp_path / "in.npy"),
                "-o",
                str(tmp_path / "out.npy"),
            ]
        )
        == 0
    )
    outputs = np.load(tmp_path / "out.npy")
    expected = akida.Model(str(fbz)).forward(frames)
    assert outputs.dtype == expected.dtype
    assert np.array_equal(outputs, expected)
    assert load_program(tmp_path / "p.sfp").fbz == fbz.read_bytes()


def test_run_json_reports_shape_and_spike_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_program(tmp_path / "p.sfp", spiking_reference_program())
    frames = np.zeros((3, 34, 34, 2), np.uint8)
    frames[:, 10:20, 10:20] = 3
    np.save(tmp_path / "in.npy", frames)
    capsys.readouterr()
    assert (
        main(
            [
                "run",
                str(tmp_path / "p.sfp"),
                "--frames",
                str(tmp_path / "in.npy"),
                "-o",
                str(tmp_path / "out.npy"),
                "--spike-counts",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 3
    assert report["output_shape"] == [3, 1, 1, 10]
    assert report["output_dtype"] == "int32"
    assert set(report["mean_nonzero_outputs"]) == {"conv1", "conv2", "fc"}


def test_run_verifies_signed_programs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_program(tmp_path / "p.sfp", spiking_reference_program())
    assert main(["keygen", "-o", str(tmp_path / "k.key")]) == 0
    assert (
        main(
            [
                "sign",
                str(tmp_path / "p.sfp"),
                "--key",
                str(tmp_path / "k.key"),
                "-o",
                str(tmp_path / "s.sfp"),
            ]
        )
        == 0
    )
    np.save(tmp_path / "in.npy", np.zeros((1, 34, 34, 2), np.uint8))
    args = [
        "run",
        str(tmp_path / "s.sfp"),
        "--frames",
        str(tmp_path / "in.npy"),
        "-o",
        str(tmp_path / "out.npy"),
    ]
    capsys.readouterr()
    assert main(args) == 1
    assert "signed" in capsys.readouterr().err
    assert main([*args, "--trusted", str(tmp_path / "k.key.pub")]) == 0


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 34, 34, 3), np.uint8), "expected (N, 34, 34, 2)"),
        (np.full((2, 34, 34, 2), 200, np.uint8), "4-bit input"),
        (np.zeros((2, 34, 34, 2), np.float32), "must be uint8"),
        (None, "does not exist"),
    ],
)
def test_run_refuses_bad_frames_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], frames: np.ndarray | None, message: str
) -> None:
    save_program(tmp_path / "p.sfp", spiking_reference_program())
    if frames is not None:
        np.save(tmp_path / "in.npy", frames)
    capsys.readouterr()
    assert (
        main(
            [
                "run",
                str(tmp_path / "p.sfp"),
                "--frames",
                str(tmp_path / "in.npy"),
                "-o",
                str(tmp_path / "out.npy"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out.npy").exists()


def test_export_akida_writes_fbz_and_fills_hardware_parts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_program(tmp_path / "p.sfp", spiking_reference_program())
    capsys.readouterr()
    assert (
        main(["export-akida", str(tmp_path / "p.sfp"), "-o", str(tmp_path / "m.fbz"), "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["nps"] == 65 and report["device"] == "AKD1000"
    program = load_program(tmp_path / "p.sfp")
    assert program.hardware is not None and program.hardware.np_count == 65
    assert len(program.hardware.program_data) == report["program_data_bytes"] > 100_000
    assert program.fbz == (tmp_path / "m.fbz").read_bytes()
    frames = random_frames(1, program, 5)
    expected = akida.Model(str(tmp_path / "m.fbz")).forward(frames)
    assert np.array_equal(expected, to_akida(spiking_reference_program()).forward(frames))


def test_export_akida_says_why_a_program_does_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    program = spiking_reference_program()
    conv1 = program.layers[1]
    assert isinstance(conv1, Convolutional)
    conv1.padding = Padding.VALID
    save_program(tmp_path / "p.sfp", program)
    capsys.readouterr()
    assert main(["export-akida", str(tmp_path / "p.sfp"), "-o", str(tmp_path / "m.fbz")]) == 1
    err = capsys.readouterr().err
    assert "does not map onto AKD1000" in err and "Only padding same" in err
    assert err.count("\n") == 1
    assert (tmp_path / "m.fbz").exists()
    assert load_program(tmp_path / "p.sfp").hardware is None


@pytest.mark.parametrize("command", ["import-akida", "export-akida"])
def test_akida_commands_without_akida_exit_1_saying_how_to_get_it(
    tmp_path: Path, command: str
) -> None:
    save_program(tmp_path / "p.sfp", spiking_reference_program())
    to_akida(spiking_reference_program()).save(str(tmp_path / "m.fbz"))
    source = {"import-akida": "m.fbz", "export-akida": "p.sfp"}[command]
    target = {"import-akida": "q.sfp", "export-akida": "n.fbz"}[command]
    code = (
        "import sys; sys.modules['akida'] = None\n"
        "from spikefleet.cli.main import main\n"
        f"sys.exit(main([{command!r}, {str(tmp_path / source)!r}, '-o', "
        f"{str(tmp_path / target)!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "pip install 'spikefleet[akida]'" in done.stderr
    assert not (tmp_path / target).exists()


def test_run_works_without_akida(tmp_path: Path) -> None:
    save_program(tmp_path / "p.sfp", spiking_reference_program())
    np.save(tmp_path / "in.npy", np.zeros((2, 34, 34, 2), np.uint8))
    code = (
        "import sys; sys.modules['akida'] = None\n"
        "from spikefleet.cli.main import main\n"
        f"sys.exit(main(['run', {str(tmp_path / 'p.sfp')!r}, '--frames', "
        f"{str(tmp_path / 'in.npy')!r}, '-o', {str(tmp_path / 'out.npy')!r}, '--json']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "out.npy").shape == (2, 1, 1, 10)


@pytest.mark.parametrize("command", ["run", "import-akida", "export-akida"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "usage: spikefleet " + command in capsys.readouterr().out


def test_run_prints_each_samples_class_from_its_frames_summed_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spikefleet.engine import Engine

    program = spiking_reference_program()
    save_program(tmp_path / "p.sfp", program)
    frames = np.random.default_rng(9).integers(0, 16, (6, 34, 34, 2), dtype=np.uint8)
    np.save(tmp_path / "in.npy", frames)
    scores = Engine(program).class_scores(Engine(program).run(frames).outputs)
    expected = [int(c) for c in scores.reshape(2, 3, -1).sum(axis=1).argmax(axis=1)]
    base = ["run", str(tmp_path / "p.sfp"), "-o", str(tmp_path / "out.npy")]
    capsys.readouterr()

    assert main([*base, "--frames", str(tmp_path / "in.npy"), "--frames-per-sample", "3"]) == 0
    table = capsys.readouterr().out
    assert f"class per sample  │ {expected[0]}, {expected[1]}" in table

    np.save(tmp_path / "samples.npy", frames.reshape(2, 3, 34, 34, 2))  # S x T x H x W x C
    assert main([*base, "--frames", str(tmp_path / "samples.npy"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["samples"], report["frames_per_sample"]) == (2, 3)
    assert report["classes"] == expected and report["output_shape"] == [2, 3, 1, 1, 10]

    assert main([*base, "--frames", str(tmp_path / "in.npy"), "--frames-per-sample", "4"]) == 1
    assert "does not divide the 6 frames" in capsys.readouterr().err
