"""``python -m spikefleet.qat``: the reference network fine-tuned on N-DIGITS train samples
only, written as a bundle whose program computes it spike for spike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spikefleet.convert import ConvertOptions, convert
from spikefleet.datasets import ndigits
from spikefleet.qat.__main__ import main


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ndigits.build(tmp_path_factory.mktemp("ndigits"), limit=60)


@pytest.mark.parametrize(
    "recipe",
    [
        # QAT through a (one-epoch) training run from a fresh network, every train sample
        [
            "--start",
            "scratch",
            "--schedule",
            "onecycle",
            "--lr",
            "5e-3",
            "--weight-decay",
            "1e-4",
            "--distill",
            "0",
            "--holdout",
            "0",
        ],
        # the converter's calibrated start on every fine-tuning sample, a sample loss
        ["--start", "calibrated", "--calib-samples", "0", "--sample-loss", "--holdout", "0.25"],
        # from the weights, a held-out set only measured (the epoch is not chosen on it)
        ["--start", "weights", "--distill", "0", "--holdout", "0.25", "--keep-last"],
    ],
)
def test_the_cli_writes_a_bundle_the_converter_certifies(
    root: Path,
    recipe: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    splits: list[str] = []
    load = ndigits.load_frames

    def recorded(where: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        splits.append(split)
        return load(where, split)

    monkeypatch.setattr(ndigits, "load_frames", recorded)
    bundle = tmp_path / "qat.bundle"
    argv = ["--root", str(root), "--epochs", "1", "--threads", "1", "--out", str(bundle)]
    assert main(argv + recipe) == 0
    assert splits == ["train"]  # the test split is for the reported figure only
    out = capsys.readouterr().out
    assert ("held-out" in out) == ("0.25" in recipe)
    # an epoch is chosen on the held-out set unless --keep-last says to keep the last
    assert ("best so far" in out) == ("0.25" in recipe and "--keep-last" not in recipe)
    train, _ = ndigits.load_frames(root, "train")
    calib = train.reshape(-1, *train.shape[2:])[:96]
    result = convert(bundle, calibration=calib, options=ConvertOptions(hardware=False))
    assert result.report is not None and result.report.certificate is not None
    assert result.report.certificate["spikes_equal"] and result.report.certificate["top1_equal"]
