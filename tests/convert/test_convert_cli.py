"""``spikefleet convert`` end to end: real model files in, real program files out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from convert_models import REF_ARCH, RefLikeNet, random_frames, to_input

import spikefleet
from spikefleet.cli.main import main
from spikefleet.program.files import load_program
from spikefleet.program.signing import SigningKey, TrustedKeys


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    model = RefLikeNet()
    frames = random_frames(120, seed=5)
    with torch.no_grad():
        labels = model(to_input(frames)).argmax(1).numpy()
    labels[:10] = (labels[:10] + 1) % 10  # a known 10 wrong labels out of 120
    bundle = root / "ref.safetensors"
    spikefleet.extract(model, to_input(frames[:1]), bundle)
    state = root / "ref.pt"
    torch.save(model.state_dict(), state)
    calib = root / "calib.npz"
    np.savez(calib, frames=frames, labels=labels)
    return {"bundle": bundle, "state": state, "calib": calib, "root": root}


def test_convert_with_calibration_prints_fidelity_json(
    model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ref.program"
    code = main(
        [
            "convert",
            str(model_files["bundle"]),
            "--calib",
            str(model_files["calib"]),
            "-o",
            str(out),
            "--no-hardware",
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    fidelity = summary["fidelity"]
    assert fidelity["samples"] == 120
    assert fidelity["float_accuracy"] == pytest.approx(110 / 120)
    assert fidelity["top1_agreement"] > 0.9
    program = load_program(out)
    assert program.provenance.fidelity == fidelity
    assert len(program.provenance.source_sha256) == 64
    assert program.provenance.converter_version.startswith("spikefleet-convert")


def test_convert_signs_with_a_key(model_files: dict[str, Path], tmp_path: Path) -> None:
    key = SigningKey.generate()
    key_path = tmp_path / "signing.key"
    key.save(key_path)
    out = tmp_path / "ref.signed"
    code = main(
        [
            "convert",
            str(model_files["state"]),
            "--arch",
            REF_ARCH,
            "-o",
            str(out),
            "--sign-key",
            str(key_path),
            "--no-hardware",
        ]
    )
    assert code == 0
    trusted = TrustedKeys([key.public_key])
    program = load_program(out, trusted)
    assert program.layers[1].name == "conv1"


def test_convert_table_output_and_hardware_parts(
    model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ref.program"
    assert main(["convert", str(model_files["bundle"]), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    program = load_program(out)
    assert program.hardware is not None and 0 < program.hardware.np_count <= 80
    assert f"maps onto {program.hardware.np_count} NPs" in printed
    assert program.fbz is not None and len(program.fbz) > 0


def test_refusal_is_one_line_and_exit_code_one(
    model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = RefLikeNet(beta=0.5)
    bundle = tmp_path / "beta.safetensors"
    spikefleet.extract(model, to_input(random_frames(1)), bundle)
    code = main(["convert", str(bundle), "-o", str(tmp_path / "x.program"), "--no-hardware"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("spikefleet convert: error: layer 'lif1': beta=0.5")
    assert not (tmp_path / "x.program").exists()


def test_bad_input_shape_is_a_clear_error(
    model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "convert",
            str(model_files["state"]),
            "--arch",
            REF_ARCH.split(" ", 1)[1],
            "--input-shape",
            "34x34",
            "-o",
            str(tmp_path / "p"),
        ]
    )
    assert code == 1
    assert "--input-shape '34x34'" in capsys.readouterr().err


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = capsys.readouterr().out
    for option in ("--arch", "--calib", "--labels", "--sign-key", "--json", "--allow-beta"):
        assert option in text


def test_fidelity_report_round_trips_through_json() -> None:
    from spikefleet.convert import FidelityReport, LayerFidelity

    report = FidelityReport(
        samples=3,
        top1_agreement=2 / 3,
        float_accuracy=1.0,
        int_accuracy=2 / 3,
        layers=[LayerFidelity("conv1", 0.2, 0.25, 0.95, 0.9)],
        notes=["a note"],
    )
    again = FidelityReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report
    assert ("int accuracy", "66.67%") in again.rows()


def test_calibration_from_an_ndigits_root_and_from_class_folders(
    model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from spikefleet.convert.calibration import load_calibration
    from spikefleet.datasets import ndigits

    root = ndigits.build(tmp_path / "ndigits", limit=40)
    frames, labels = load_calibration(root, split="test")
    assert frames.ndim == 5 and frames.shape[2:] == (34, 34, 2) and len(labels) == len(frames)

    folders = tmp_path / "folders"
    index = ndigits.read_index(root)
    for entry in index["samples"][:12]:
        target = folders / str(entry["label"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / entry["file"], target / Path(entry["file"]).name)
    frames, labels = load_calibration(folders)
    assert len(frames) == len(labels) == 12 and frames.ndim == 5

    out = tmp_path / "ref.program"
    code = main(
        [
            "convert",
            str(model_files["bundle"]),
            "--calib",
            str(folders),
            "-o",
            str(out),
            "--no-hardware",
            "--json",
        ]
    )
    assert code == 0
    fidelity = json.loads(capsys.readouterr().out)["fidelity"]
    assert fidelity["samples"] == 12 and fidelity["float_accuracy"] is not None
