"""Training and the shipped weights, on real N-DIGITS recordings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikefleet.convert import ConvertOptions, convert, extract
from spikefleet.datasets import ndigits
from spikefleet.engine import Engine
from spikefleet.errors import DatasetError
from spikefleet.reference import SHIPPED_WEIGHTS, frames_to_input, load_reference_model
from spikefleet.reference.train import TrainConfig, accuracy, main, shifted, train

#: The shipped weights score 99.2% on the full test split (benchmarks/RESULTS.md). A
#: 600-digit build splits differently, so some of its test recordings were training
#: recordings of the full build: this floor says the weights load and classify, no more.
ACCURACY_FLOOR = 0.95


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return ndigits.build(tmp_path_factory.mktemp("ndigits"), limit=600)


@pytest.mark.slow
def test_shipped_weights_classify_n_digits_recordings(digits):
    frames, labels = ndigits.load_frames(digits, "test")
    assert len(labels) >= 100
    model = load_reference_model()
    assert SHIPPED_WEIGHTS.stat().st_size < 400_000
    assert accuracy(model, frames, labels) >= ACCURACY_FLOOR


@pytest.mark.slow
def test_training_lowers_the_loss_and_beats_chance(digits):
    losses: list[float] = []
    result = train(digits, TrainConfig(epochs=3), progress=lambda e, n, loss: losses.append(loss))
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.train_accuracy > 0.2 and 0.0 <= result.test_accuracy <= 1.0


def test_training_on_chosen_samples_leaves_the_others_out(tmp_path):
    root = ndigits.build(tmp_path / "nd", limit=60)
    _, labels = ndigits.load_frames(root, "train")
    config = TrainConfig(epochs=1, threads=1)
    every = train(root, config, samples=np.arange(len(labels))).model.state_dict()
    default = train(root, config).model.state_dict()
    some = train(root, config, samples=np.arange(len(labels) // 2)).model.state_dict()
    assert all(torch.equal(every[k], default[k]) for k in every)  # all samples: the default
    assert not all(torch.equal(every[k], some[k]) for k in every)
    with pytest.raises(DatasetError, match="out of range"):
        train(root, config, samples=np.array([0, len(labels)]))


def test_the_command_line_trains_and_writes_weights(tmp_path, capsys):
    root = ndigits.build(tmp_path / "nd", limit=60)
    out = tmp_path / "w.safetensors"
    assert main(["--root", str(root), "--epochs", "1", "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    load_reference_model(out)


def test_shifted_moves_the_batch_and_lets_zeros_in():
    batch = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5) + 1
    moved = shifted(batch, 1, -2)
    assert moved.shape == batch.shape
    torch.testing.assert_close(moved[:, :, 1:, :3], batch[:, :, :3, 2:])
    assert float(moved[:, :, 0].abs().sum()) == 0.0 and float(moved[:, :, :, 3:].abs().sum()) == 0.0
    torch.testing.assert_close(shifted(batch, 0, 0), batch)


@pytest.mark.slow
def test_shipped_weights_convert_exactly_to_an_akd1000_program_that_agrees(digits):
    """No shifted windows, fits the chip, and int4 answers as the float model does."""
    frames, labels = ndigits.load_frames(digits, "test")
    train_frames, _ = ndigits.load_frames(digits, "train")
    model = load_reference_model()
    bundle = digits / "reference.safetensors"
    flat = frames.reshape(-1, *frames.shape[2:])
    extract(model, frames_to_input(flat[:3]), bundle)
    result = convert(bundle, calibration=train_frames[:64], options=ConvertOptions())
    assert not any("allow_shift" in note for note in result.notes)
    assert result.program.hardware is not None and result.program.hardware.np_count <= 80
    outputs = Engine(result.program).run(flat).outputs.reshape(len(flat), -1).astype(np.float64)
    if result.program.output_scales is not None:
        outputs = outputs * result.program.output_scales
    int4 = outputs.reshape(len(labels), frames.shape[1], -1).sum(1).argmax(1)
    with torch.no_grad():
        scores = model(frames_to_input(flat)).numpy()
    float_pred = scores.reshape(len(labels), frames.shape[1], -1).sum(1).argmax(1)
    assert (int4 == float_pred).mean() >= 0.95
    assert (int4 == labels).mean() >= (float_pred == labels).mean() - 0.02


def flips_and_score_error(program, model, flat: np.ndarray) -> tuple[list[float], float]:
    """Per spiking layer the share of spike decisions that differ from the float model's on
    ``flat`` frames, and the RMS error of the class scores relative to their spread."""
    from spikefleet.program.model import Program

    with torch.no_grad():
        spk1, spk2, scores = model.forward_spikes(frames_to_input(flat))
    flips = []
    for name, expected in (("conv1", spk1), ("conv2", spk2)):
        index = next(i for i, layer in enumerate(program.layers) if layer.name == name)
        prefix = Program(name="prefix", layers=program.layers[: index + 1])
        fired = Engine(prefix).run(flat).outputs > 0
        wanted = expected.numpy().transpose(0, 2, 3, 1) > 0
        flips.append(float((fired[..., : wanted.shape[-1]] != wanted).mean()))
    outputs = Engine(program).run(flat).outputs.reshape(len(flat), -1).astype(np.float64)
    outputs = outputs * program.output_scales
    reference = scores.numpy()
    return flips, float(np.sqrt(((outputs - reference) ** 2).mean()) / reference.std())


@pytest.mark.slow
@pytest.mark.parametrize("draw", [0, 1, 2])
def test_calibration_does_not_worsen_the_shipped_weights(digits, draw):
    """On frames the calibration never saw, the calibrated program flips fewer spike
    decisions in every layer than the uncalibrated one and follows the float scores
    more closely, whichever of three disjoint calibration sets it was given:
    calibration must earn its changes on every draw, not on a lucky one (issue 13)."""
    frames, _ = ndigits.load_frames(digits, "test")
    train_frames, _ = ndigits.load_frames(digits, "train")
    assert len(train_frames) >= 192
    flat = frames.reshape(-1, *frames.shape[2:])
    model = load_reference_model()
    bundle = digits / "reference-calibration.safetensors"
    extract(model, frames_to_input(flat[:3]), bundle)
    options = ConvertOptions(hardware=False)
    plain = convert(bundle, options=options).program
    calibration = train_frames[64 * draw : 64 * (draw + 1)]
    calibrated = convert(bundle, calibration=calibration, options=options).program
    plain_flips, plain_error = flips_and_score_error(plain, model, flat)
    calibrated_flips, calibrated_error = flips_and_score_error(calibrated, model, flat)
    assert all(c < p for c, p in zip(calibrated_flips, plain_flips, strict=True))
    assert calibrated_error < plain_error
