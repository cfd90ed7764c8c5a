"""Models as users write them convert, with and without calibration, or are refused in one
line naming the layer and the fix (see user_models.ZOO)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from user_models import ZOO, UserModel, accuracy, bars, to_torch, train

import spikefleet
from spikefleet.cli.main import main
from spikefleet.program.files import load_program

CONVERTS = [name for name, model in ZOO.items() if model.refusal is None]
REFUSED = [name for name, model in ZOO.items() if model.refusal is not None]


@pytest.fixture(scope="session")
def task() -> dict[str, np.ndarray]:
    train_frames, train_labels = bars(320, seed=1)
    test_frames, test_labels = bars(96, seed=2)
    return {"x": train_frames, "y": train_labels, "tx": test_frames, "ty": test_labels}


@pytest.fixture(scope="session")
def zoo_files(
    task: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, object]]:
    """Each model trained briefly once, extracted to a suffix-less bundle, plus calibration."""
    root = tmp_path_factory.mktemp("zoo")
    made: dict[str, dict[str, object]] = {}
    trained: dict[str, torch.nn.Module] = {}
    for name, spec in ZOO.items():
        key = (spec.build, spec.run)
        net = next((n for k, n in trained.items() if k == str(key)), None)
        if net is None:
            torch.manual_seed(0)
            net = spec.build()
            if spec.trained and spec.refusal is None:
                net = train(net, spec.run, task["x"], task["y"])
            trained[str(key)] = net
        test = task["tx"][:48]
        sample = to_torch(test[:8]).transpose(0, 1)  # (T, N, C, H, W)
        if spec.sample == "frame":
            sample = sample.reshape(-1, *sample.shape[2:])
        bundle = root / name  # no suffix: the format is recognised by content
        spikefleet.extract(net, sample, bundle, readout=spec.readout)  # type: ignore[arg-type]
        calib = root / f"{name}.npz"
        frames = test if spec.sample == "sequence" else test.reshape(-1, *test.shape[2:])
        labels = task["ty"][:48]
        if spec.sample == "frame":
            labels = np.repeat(labels, test.shape[1])
        np.savez(calib, frames=frames, labels=labels)
        frames_as_run = test if spec.sample == "sequence" else frames[:, None]
        made[name] = {
            "bundle": bundle,
            "calib": calib,
            "float": accuracy(net, spec.run, frames_as_run, labels),
            "net": net,
        }
    return made


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", CONVERTS)
def test_users_model_converts_without_calibration(
    name: str,
    zoo_files: dict[str, dict[str, object]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec: UserModel = ZOO[name]
    out = tmp_path / "model.sfp"
    code, stdout, err = cli(
        ["convert", str(zoo_files[name]["bundle"]), "-o", str(out), "--json", *spec.flags], capsys
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert any("float reference" in note for note in summary["notes"])
    program = load_program(out)
    last = program.layers[-1]
    assert (last.activation is not None) == (spec.readout == "spikes")  # type: ignore[union-attr]
    if "--no-hardware" not in spec.flags:
        assert summary["akd1000_nps"] > 0


@pytest.mark.parametrize("name", CONVERTS)
def test_users_model_converts_with_calibration_and_follows_the_float_model(
    name: str,
    zoo_files: dict[str, dict[str, object]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = ZOO[name]
    files = zoo_files[name]
    out = tmp_path / "model.sfp"
    args = ["convert", str(files["bundle"]), "--calib", str(files["calib"]), "-o", str(out)]
    code, stdout, err = cli([*args, "--json", *spec.flags], capsys)
    assert code == 0, err
    fidelity = json.loads(stdout)["fidelity"]
    # The report's float side is the user's model, as torch computes it.
    assert fidelity["float_accuracy"] == pytest.approx(files["float"], abs=1e-9)
    assert fidelity["float_accuracy"] > 0.7  # trained: the task is learnt
    assert fidelity["int_accuracy"] >= fidelity["float_accuracy"] - 0.1
    if name == "class-time-loop-subtract":
        assert fidelity["multistep"] is not None
        assert any("reset_mechanism='zero'" in n for n in fidelity["notes"])


@pytest.mark.parametrize("name", REFUSED)
def test_users_model_is_refused_in_one_line_with_the_fix(
    name: str,
    zoo_files: dict[str, dict[str, object]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = ZOO[name]
    assert spec.refusal is not None
    layer, words = spec.refusal
    for extra in ([], ["--calib", str(zoo_files[name]["calib"])]):
        args = ["convert", str(zoo_files[name]["bundle"]), "-o", str(tmp_path / "m"), *extra]
        code, _, err = cli(args, capsys)
        assert code == 1
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1]
        assert errors[0].startswith("spikefleet convert: error: ")
        assert f"'{layer}" in errors[0] and words in errors[0]


def test_spike_and_membrane_read_outs_are_an_explicit_choice_on_both_paths(
    zoo_files: dict[str, dict[str, object]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A (spk, mem) model gives the same program from its bundle and from its state_dict."""
    net = zoo_files["class-spk-mem-spike-counts"]["net"]
    assert isinstance(net, torch.nn.Module)
    state = tmp_path / "weights.pt"
    torch.save(net.state_dict(), state)
    arch = "Input(16,16,2) FC(32) Leaky FC(4) Leaky"
    sample = to_torch(bars(4)[0][:, 0])
    for readout in ("potential", "spikes"):
        bundle = tmp_path / f"{readout}.bundle"
        spikefleet.extract(net, sample, bundle, readout=readout)  # type: ignore[arg-type]
        programs = []
        for source, extra in (
            (bundle, []),
            (state, ["--arch", arch]),
            (state, ["--arch", f"{arch} Readout({readout})"]),
        ):
            if extra and "Readout" not in extra[-1]:
                extra = [*extra, "--readout", readout]
            out = tmp_path / f"{readout}-{len(programs)}.sfp"
            code, _, err = cli(
                ["convert", str(source), "-o", str(out), "--no-hardware", *extra], capsys
            )
            assert code == 0, err
            programs.append(load_program(out))
        kinds = {program.layers[-1].activation is None for program in programs}  # type: ignore[union-attr]
        assert kinds == {readout == "potential"}
        weights = {program.layers[-1].weights.tobytes() for program in programs}  # type: ignore[union-attr]
        assert len(weights) == 1
