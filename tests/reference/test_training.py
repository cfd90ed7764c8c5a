"""Training and the shipped weights, on real N-DIGITS recordings."""

from __future__ import annotations

import pytest

from spikefleet.datasets import ndigits
from spikefleet.reference import SHIPPED_WEIGHTS, load_reference_model
from spikefleet.reference.train import TrainConfig, accuracy, main, train

#: The shipped weights score 87% on the full test split (benchmarks/RESULTS.md);
#: this floor leaves room for the smaller subset's sampling noise.
ACCURACY_FLOOR = 0.78


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return ndigits.build(tmp_path_factory.mktemp("ndigits"), limit=600)


@pytest.mark.slow
def test_shipped_weights_classify_held_out_digits(digits):
    frames, labels = ndigits.load_frames(digits, "test")
    assert len(labels) >= 100
    model = load_reference_model()
    assert SHIPPED_WEIGHTS.stat().st_size < 200_000
    assert accuracy(model, frames, labels) >= ACCURACY_FLOOR


@pytest.mark.slow
def test_training_lowers_the_loss_and_beats_chance(digits):
    losses: list[float] = []
    result = train(digits, TrainConfig(epochs=3), progress=lambda e, n, loss: losses.append(loss))
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.train_accuracy > 0.2 and 0.0 <= result.test_accuracy <= 1.0


def test_the_command_line_trains_and_writes_weights(tmp_path, capsys):
    root = ndigits.build(tmp_path / "nd", limit=60)
    out = tmp_path / "w.safetensors"
    assert main(["--root", str(root), "--epochs", "1", "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    load_reference_model(out)
