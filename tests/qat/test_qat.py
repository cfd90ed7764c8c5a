"""spikefleet.qat: fine-tuned with the converter's own int4 grid, the program computes the
fine-tuned network spike for spike (the fidelity report's certificate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

import spikefleet
from spikefleet import qat
from spikefleet.convert import ConvertOptions, convert
from spikefleet.convert.quantize import choose_scales
from spikefleet.engine import Engine
from spikefleet.errors import ConversionError
from spikefleet.program.model import Program

SIZE = (12, 12, 2)


def frames(n: int, seed: int, per_sample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Sparse count frames whose class is the quadrant holding most events; with
    ``per_sample`` > 1, runs of that many consecutive frames share a class (one sample)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 16, (n, *SIZE)) * (rng.random((n, *SIZE)) < 0.2)
    labels = np.repeat(rng.integers(0, 4, -(-n // per_sample)), per_sample)[:n]
    for i, label in enumerate(labels):
        top, left = divmod(int(label), 2)
        counts[i, top * 6 : top * 6 + 6, left * 6 : left * 6 + 6] += rng.integers(0, 6, (6, 6, 2))
    return np.clip(counts, 0, 15).astype(np.uint8), labels


def as_input(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float()


class ConvGap(nn.Module):
    """conv -> Leaky -> conv -> global average -> Leaky -> Linear -> Leaky (membrane)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.0)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.lif2 = snn.Leaky(beta=0.0, threshold=0.3)
        self.fc = nn.Linear(16 * 1 + 0, 4)
        self.lif3 = snn.Leaky(beta=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cur = self.conv1(x)
        spk, _ = self.lif1(cur, torch.zeros_like(cur))
        cur = self.pool(self.conv2(spk)).flatten(1)
        spk, _ = self.lif2(cur, torch.zeros_like(cur))
        cur = self.fc(spk)
        _, mem = self.lif3(cur, torch.zeros_like(cur))
        return mem


class FCNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(int(np.prod(SIZE)), 32)
        self.lif1 = snn.Leaky(beta=0.0, threshold=0.5)
        self.fc2 = nn.Linear(32, 4)
        self.lif2 = snn.Leaky(beta=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cur = self.fc1(x.flatten(1))
        spk, _ = self.lif1(cur, torch.zeros_like(cur))
        cur = self.fc2(spk)
        _, mem = self.lif2(cur, torch.zeros_like(cur))
        return mem


FIXED = qat.QATConfig(epochs=2, learning_rate=3e-3)
#: The reference recipe's shape: learned (LSQ) steps, distillation from the float model.
LEARNED = qat.QATConfig(epochs=2, learning_rate=3e-3, distill=0.7, learn_scales=True)
SGD = qat.QATConfig(epochs=2, learning_rate=3e-2, distill=0.7, learn_scales=True, optimizer="sgd")
#: QAT through a whole training run: one-cycle schedule, decoupled weight decay.
ONECYCLE = qat.QATConfig(
    epochs=2, learning_rate=3e-3, learn_scales=True, schedule="onecycle", weight_decay=1e-2
)


@pytest.mark.parametrize(
    ("build", "config"),
    [
        (FCNet, FIXED),
        (ConvGap, FIXED),
        (FCNet, LEARNED),
        (ConvGap, LEARNED),
        (ConvGap, SGD),
        (ConvGap, ONECYCLE),
    ],
)
def test_the_program_computes_the_fine_tuned_model_on_every_calibration_frame(
    build: type[nn.Module], config: qat.QATConfig, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    train, labels = frames(256, seed=1)
    calib, _ = frames(96, seed=2)
    model = qat.fine_tune(build(), as_input(train), torch.from_numpy(labels), config)
    bundle = tmp_path / "qat.bundle"
    qat.export(model, as_input(calib[:16]), bundle)
    result = convert(bundle, calibration=calib, options=ConvertOptions(hardware=False))
    assert result.report is not None
    assert result.report.certificate == {
        "frames": 96,
        "spikes_equal": True,
        "top1_equal": True,
        "layers": [layer.name for layer in result.report.layers],
    }
    assert sum("int4 grid" in note for note in result.notes) == len(result.program.layers) - 1
    with torch.no_grad():
        expected = model(as_input(calib)).numpy()
    program = result.program
    got = Engine(program).run(calib).outputs.reshape(96, -1) * program.output_scales
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)  # scores, not only argmax


def test_learned_steps_move_and_the_weights_stay_on_their_grid() -> None:
    torch.manual_seed(0)
    train, labels = frames(128, seed=1)
    model = FCNet()
    start = choose_scales(model.fc1.weight.detach().double().numpy(), 4, "mse")
    model = qat.fine_tune(model, as_input(train), torch.from_numpy(labels), LEARNED)
    scale = model.fc1.parametrizations.weight[0].scale.detach().double().numpy()
    assert not np.allclose(scale, start, rtol=1e-3)
    steps = model.fc1.weight.detach().double().numpy() / scale[:, None]
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-4)
    assert np.abs(steps).max() <= 7 + 1e-4


def test_fine_tuning_keeps_the_epoch_that_did_best_on_held_out_frames() -> None:
    """A rate that wrecks the model: the model returned is the best one seen on the held-out
    frames (here the prepared model before any step), not the last."""
    train, labels = frames(256, seed=1)
    held, held_labels = frames(96, seed=4)
    stats: list[qat.EpochStats] = []
    validation = (as_input(held), torch.from_numpy(held_labels))
    torch.manual_seed(0)
    model = qat.fine_tune(
        FCNet(),
        as_input(train),
        torch.from_numpy(labels),
        qat.QATConfig(epochs=3, learning_rate=0.5),
        progress=stats.append,
        validation=validation,
    )
    assert [s.epoch for s in stats] == [0, 1, 2, 3] and stats[0].train_loss is None
    losses = [s.validation_loss for s in stats]
    assert all(loss is not None for loss in losses)
    best = min(range(len(stats)), key=lambda i: losses[i])  # type: ignore[arg-type, return-value]
    assert best < len(stats) - 1  # the rate made the last epoch worse than an earlier one
    with torch.no_grad():
        kept = float(nn.functional.cross_entropy(model(validation[0]), validation[1]))
    assert kept == pytest.approx(losses[best], rel=1e-5)
    assert stats[best].best


def trained_float(build: type[nn.Module]) -> nn.Module:
    """A float model trained briefly on the quadrant task (no quantization)."""
    torch.manual_seed(0)
    model = build()
    train, labels = frames(256, seed=1)
    x, y = as_input(train), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(2):
        for start in range(0, len(x), 32):
            loss = nn.functional.cross_entropy(model(x[start : start + 32]), y[start : start + 32])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def scores(program: Program, x: np.ndarray) -> np.ndarray:
    return Engine(program).run(x).outputs.reshape(len(x), -1) * program.output_scales


@pytest.mark.parametrize("build", [FCNet, ConvGap])
def test_a_calibrated_start_is_the_converters_calibrated_program(
    build: type[nn.Module], tmp_path: Path
) -> None:
    """Prepared from calibration inputs, the fake-quantized model is the program the
    converter makes from the float model with the same calibration: exported and
    converted, it gives the same scores on frames neither saw."""
    model = trained_float(build)
    calib, _ = frames(96, seed=2)
    unseen, _ = frames(64, seed=5)
    spikefleet.extract(model, as_input(calib[:16]), tmp_path / "float.bundle")
    options = ConvertOptions(hardware=False)
    ptq = convert(tmp_path / "float.bundle", calibration=calib, options=options)
    assert not any("int4 grid" in note for note in ptq.notes)

    qat.prepare(model, learn_scales=True, calibration=as_input(calib))
    qat.export(model, as_input(calib[:16]), tmp_path / "start.bundle")
    start = convert(tmp_path / "start.bundle", calibration=calib, options=options)
    assert start.report is not None and start.report.certificate is not None
    assert start.report.certificate["spikes_equal"] and start.report.certificate["top1_equal"]
    np.testing.assert_allclose(
        scores(start.program, unseen), scores(ptq.program, unseen), rtol=1e-5, atol=1e-5
    )


class WideReadout(nn.Module):
    """FCNet with a read-out of fan-in 600: its calibration search takes 2,048 samples."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(int(np.prod(SIZE)), 600)
        self.lif1 = snn.Leaky(beta=0.0, threshold=0.5)
        self.fc2 = nn.Linear(600, 4)
        self.lif2 = snn.Leaky(beta=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cur = self.fc1(x.flatten(1))
        spk, _ = self.lif1(cur, torch.zeros_like(cur))
        _, mem = self.lif2(self.fc2(spk), torch.zeros_like(cur[:, :4]))
        return mem


def test_a_calibrated_start_from_more_frames_than_the_search_takes() -> None:
    """Given more calibration frames than the read-out's search samples (2,048), the
    search picks the same samples for its inputs and its targets (it once kept every
    input and crashed on the mismatch); the start stays on the grid."""
    torch.manual_seed(0)
    calib, _ = frames(2100, seed=2)
    model = qat.prepare(WideReadout(), calibration=as_input(calib))
    scale = model.fc2.parametrizations.weight[0].scale.detach().double().numpy()
    steps = model.fc2.weight.detach().double().numpy() / scale[:, None]
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-4)


def test_export_keeps_the_fake_quantized_decisions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = qat.prepare(FCNet())
    x = as_input(frames(32, seed=3)[0])
    with torch.no_grad():
        before = model.fc1(x.flatten(1))
        fired = (before > model.lif1.threshold).numpy()
        scores = model(x).argmax(1)
    qat.export(model, x)
    with torch.no_grad():
        after = model.fc1(x.flatten(1))
        np.testing.assert_array_equal((after > model.lif1.threshold).numpy(), fired)
        np.testing.assert_array_equal(model(x).argmax(1), scores)


def test_weight_decay_shrinks_the_weights_but_never_the_learned_steps() -> None:
    """Decoupled decay pulls every parameter toward zero; on a log-step that would drag
    the step toward 1 whatever the loss wants, so the steps are left out of it: they
    move only by Adam's steps (at most about the rate each), the weights shrink."""
    train, labels = frames(64, seed=1)
    x, y = as_input(train), torch.from_numpy(labels)
    steps, scale_rate = 16, 1e-3
    weights = {}
    for decay in (0.0, 5.0):
        torch.manual_seed(0)
        model = FCNet()
        start = np.log(choose_scales(model.fc1.weight.detach().double().numpy(), 4, "mse"))
        config = qat.QATConfig(
            epochs=1,
            batch_size=len(x) // steps,
            learning_rate=1e-2,
            learn_scales=True,
            scale_learning_rate=scale_rate,
            weight_decay=decay,
        )
        qat.fine_tune(model, x, y, config)
        quantizer = model.fc1.parametrizations.weight[0]
        moved = np.abs(quantizer.log_scale.detach().double().numpy() - start)
        assert moved.max() <= 1.5 * steps * scale_rate  # decay at 5 would move it by ~0.3
        weights[decay] = float(model.fc1.parametrizations.weight.original.detach().abs().mean())
    assert weights[5.0] < 0.8 * weights[0.0]


def test_a_sample_loss_scores_each_samples_summed_frames() -> None:
    """With frames_per_sample, the held-out loss and accuracy are those of whole samples
    (scores summed over their frames, as the sample is classified), and the model kept is
    the one that did best on them."""
    train, labels = frames(240, seed=1, per_sample=3)
    held, held_labels = frames(96, seed=4, per_sample=3)
    validation = (as_input(held), torch.from_numpy(held_labels))
    stats: list[qat.EpochStats] = []
    torch.manual_seed(0)
    config = qat.QATConfig(epochs=2, learning_rate=3e-3, frames_per_sample=3)
    model = qat.fine_tune(
        FCNet(),
        as_input(train),
        torch.from_numpy(labels),
        config,
        progress=stats.append,
        validation=validation,
    )
    best = next(s for s in reversed(stats) if s.best)
    with torch.no_grad():
        summed = model(validation[0]).reshape(32, 3, -1).sum(1)
    sample_labels = validation[1][::3]
    assert best.validation_accuracy == pytest.approx(
        float((summed.argmax(1) == sample_labels).float().mean())
    )
    assert best.validation_loss == pytest.approx(
        float(nn.functional.cross_entropy(summed, sample_labels)), rel=1e-5
    )


@pytest.mark.parametrize(
    ("count", "mixed", "message"),
    [
        (31, False, "31 inputs do not split into samples of frames_per_sample=3"),
        (30, True, "the inputs' labels change within a sample of 3 frames"),
    ],
)
def test_samples_must_be_whole_and_of_one_class(count: int, mixed: bool, message: str) -> None:
    train, labels = frames(count, seed=1, per_sample=3)
    if mixed:
        labels[1] = (labels[0] + 1) % 4
    config = qat.QATConfig(epochs=1, frames_per_sample=3)
    with pytest.raises(ConversionError, match=message):
        qat.fine_tune(FCNet(), as_input(train), torch.from_numpy(labels), config)


def test_an_unknown_schedule_is_refused() -> None:
    train, labels = frames(16, seed=1)
    with pytest.raises(ConversionError, match="schedule 'step': choose cosine or onecycle"):
        qat.fine_tune(
            FCNet(),
            as_input(train),
            torch.from_numpy(labels),
            qat.QATConfig(schedule="step"),  # type: ignore[arg-type]
        )


def test_batchnorm_must_be_folded_first() -> None:
    with pytest.raises(ConversionError, match="fold BatchNorm"):
        qat.prepare(nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)))


def test_importing_spikefleet_qat_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, spikefleet.qat; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
