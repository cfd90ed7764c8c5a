"""The compatibility check: each refusal is fed a real offending SNNTorch model,
names the layer, and says the way out; what Akida can do is folded instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import snntorch as snn
import torch
from convert_models import Chain, RefLikeNet, Residual, random_frames, to_input
from torch import nn

import spikefleet
from spikefleet.convert import ConvertOptions, convert
from spikefleet.errors import ConversionError, IncompatibleModelError

OFFLINE = ConvertOptions(hardware=False)
SMALL = (8, 8, 2)


def converted(model: nn.Module, tmp_path: Path, options: ConvertOptions = OFFLINE, **kwargs):
    frames = random_frames(2, SMALL)
    bundle = tmp_path / "model.safetensors"
    spikefleet.extract(model, to_input(frames), bundle)
    return convert(bundle, options=options, **kwargs)


def refused(model: nn.Module, tmp_path: Path, **kwargs) -> IncompatibleModelError:
    with pytest.raises(IncompatibleModelError) as info:
        converted(model, tmp_path, **kwargs)
    return info.value


def fc(out: int = 6) -> nn.Module:
    return nn.Linear(2 * 8 * 8, out)


@pytest.mark.parametrize(
    ("neuron", "kind"),
    [
        (lambda: snn.RLeaky(beta=0.0, linear_features=6), "RLeaky"),
        (lambda: snn.RSynaptic(alpha=0.5, beta=0.0, linear_features=6), "RSynaptic"),
        (lambda: snn.Synaptic(alpha=0.5, beta=0.0), "Synaptic"),
        (lambda: snn.Alpha(alpha=0.6, beta=0.5), "Alpha"),
        (lambda: snn.SLSTM(6, 6), "SLSTM"),
    ],
)
def test_stateful_neurons_are_refused_by_name(neuron, kind: str, tmp_path: Path) -> None:
    model = Chain(nn.Flatten(), fc(), neuron(), nn.Linear(6, 3), snn.Leaky(beta=0.0))
    error = refused(model, tmp_path)
    assert error.layer == "layers.2"
    assert kind in str(error)
    assert "Leaky(beta=0)" in error.remedy


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(128, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.flatten(1)[:, None, :])
        return self.fc(out[:, -1])


class AttentionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(128, 16)
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.lif = snn.Leaky(beta=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.flatten(1))[:, None, :]
        attended, _ = self.attention(tokens, tokens, tokens)
        _, mem = self.lif(attended[:, 0])
        return mem


def test_lstm_is_refused(tmp_path: Path) -> None:
    error = refused(LSTMNet(), tmp_path)
    assert error.layer == "lstm" and "LSTM" in str(error)


def test_attention_is_refused(tmp_path: Path) -> None:
    error = refused(AttentionNet(), tmp_path)
    assert error.layer == "attention" and "attention" in error.remedy


def test_residual_path_is_refused_naming_both_ends(tmp_path: Path) -> None:
    error = refused(Residual(), tmp_path)
    assert error.layer == "conv2->lif2"
    assert "residual" in str(error)


def test_beta_is_refused_without_the_flag(tmp_path: Path) -> None:
    model = Chain(nn.Flatten(), fc(), snn.Leaky(beta=0.9), nn.Linear(6, 3), snn.Leaky(beta=0.9))
    error = refused(model, tmp_path)
    assert error.layer == "layers.2" and "beta=0.9" in str(error)
    assert "allow_beta" in error.remedy


def test_beta_with_the_flag_converts_and_measures_fidelity_over_time(tmp_path: Path) -> None:
    hidden_layer = fc(16)
    with torch.no_grad():  # one frame stays below threshold; a few accumulated frames do not
        hidden_layer.weight.abs_().div_(20)
        hidden_layer.bias.zero_()
    model = Chain(
        nn.Flatten(), hidden_layer, snn.Leaky(beta=0.9), nn.Linear(16, 3), snn.Leaky(beta=0.9)
    )
    sequences = np.stack([random_frames(6, SMALL, seed=s) for s in range(40)])  # (40, 6, ...)
    result = converted(
        model, tmp_path, ConvertOptions(hardware=False, allow_beta=True), calibration=sequences
    )
    assert result.report is not None and result.report.samples == 40
    assert any("beta=0.9 converted as beta=0" in note for note in result.notes)
    hidden = result.report.layers[0]
    assert hidden.float_rate > 2 * hidden.int_rate
    assert hidden.rate_agreement < 0.9


def test_reset_subtract_at_beta_zero_is_a_note_that_says_when_it_matters(
    tmp_path: Path,
) -> None:
    model = Chain(nn.Flatten(), fc(), snn.Leaky(beta=0.0), nn.Linear(6, 3))
    result = converted(model, tmp_path)
    assert any("inhibited at t" in n and "reset_mechanism='zero'" in n for n in result.notes)
    zero = Chain(nn.Flatten(), fc(), snn.Leaky(beta=0.0, reset_mechanism="zero"), nn.Linear(6, 3))
    assert not any("inhibited" in n for n in converted(zero, tmp_path).notes)


def test_non_positive_graded_spikes_are_refused(tmp_path: Path) -> None:
    model = Chain(
        nn.Flatten(), fc(), snn.Leaky(beta=0.0, graded_spikes_factor=-1.0), nn.Linear(6, 3)
    )
    error = refused(model, tmp_path)
    assert error.layer == "layers.2" and "graded" in str(error)


def test_inhibition_is_refused(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Inhibition"):  # snntorch's own caution
        neuron = snn.Leaky(beta=0.0, inhibition=True)
    model = Chain(nn.Flatten(), fc(), neuron, nn.Linear(6, 3))
    error = refused(model, tmp_path)
    assert "inhibition" in str(error)


def test_batchnorm_of_any_sign_folds_and_keeps_the_spikes(tmp_path: Path) -> None:
    norm = nn.BatchNorm2d(4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([-0.5, 1.5, -2.0, 0.7]))
        norm.bias.copy_(torch.tensor([0.3, -0.2, 1.2, 0.0]))
        norm.running_mean.copy_(torch.tensor([0.5, -0.5, 1.0, 0.0]))
        norm.running_var.copy_(torch.tensor([2.0, 0.5, 1.0, 3.0]))
    model = Chain(
        nn.Conv2d(2, 4, 3, padding=1), norm, snn.Leaky(beta=0.0), nn.Flatten(), nn.Linear(256, 3)
    )
    frames = random_frames(64, SMALL, seed=3)
    result = converted(model, tmp_path, calibration=frames)
    assert any("float reference" in n for n in result.notes)  # torch's own spikes reproduced
    assert result.report is not None
    hidden = result.report.layers[0]
    assert hidden.spike_agreement is not None and hidden.spike_agreement > 0.97
    assert 0.05 < hidden.float_rate < 0.95  # the negative channels do fire, and not always


@pytest.mark.parametrize(
    ("layers", "layer", "words"),
    [
        (
            [nn.Conv2d(2, 4, 3, padding=1), nn.AvgPool2d(2), snn.Leaky(beta=0.0)],
            "layers.1",
            "globally",
        ),
        (
            [nn.Conv2d(2, 4, 3, padding=1), snn.Leaky(beta=0.0), nn.AdaptiveAvgPool2d(1)],
            "layers.2",
            "multi-bit",
        ),
        (
            [nn.Conv2d(2, 4, 3, stride=(1, 2), padding=1), snn.Leaky(beta=0.0)],
            "layers.0",
            "differs by axis",
        ),
        ([nn.Conv2d(2, 4, 3, padding=2), snn.Leaky(beta=0.0)], "layers.0", "cannot pad"),
        (
            [nn.Conv2d(2, 4, 3, padding=1, dilation=1, groups=2), snn.Leaky(beta=0.0)],
            "layers.0",
            "groups=2",
        ),
        ([nn.Conv2d(2, 4, 3, padding=2, dilation=2), snn.Leaky(beta=0.0)], "layers.0", "dilation"),
        ([nn.Conv2d(2, 4, 3), nn.MaxPool2d(2), snn.Leaky(beta=0.0)], "layers.1", None),
        (
            [nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(3, 2), snn.Leaky(beta=0.0)],
            "layers.1",
            "max pooling",
        ),
    ],
)
def test_pooling_stride_and_padding_akida_cannot_do(tmp_path: Path, layers, layer, words) -> None:
    model = Chain(*layers, nn.Flatten(), nn.LazyLinear(3))
    model(to_input(random_frames(1, SMALL)))  # materialise the lazy layer
    if words is None:  # valid conv + even max pooling: converts
        converted(model, tmp_path)
        return
    error = refused(model, tmp_path)
    assert error.layer == layer
    assert words in str(error)


def test_torch_padding_that_akida_shifts_is_refused_unless_allowed(tmp_path: Path) -> None:
    model = RefLikeNet(torch_padding=True)
    bundle = tmp_path / "m.safetensors"
    spikefleet.extract(model, to_input(random_frames(2)), bundle)
    with pytest.raises(IncompatibleModelError) as info:
        convert(bundle, options=OFFLINE)
    assert info.value.layer == "conv1"
    assert "(0, 1, 0, 1)" in str(info.value) and "ZeroPad2d" in info.value.remedy
    result = convert(
        bundle,
        calibration=random_frames(100),
        options=ConvertOptions(hardware=False, allow_shift=True),
    )
    assert any("shifted windows" in note for note in result.notes)
    assert result.report is not None and result.report.top1_agreement is not None


def test_nan_weights_are_refused_naming_the_layer(tmp_path: Path) -> None:
    model = Chain(nn.Flatten(), fc(), snn.Leaky(beta=0.0), nn.Linear(6, 3))
    with torch.no_grad():
        model.layers[3].weight[0, 0] = float("nan")
    with pytest.raises(ConversionError, match=r"'layers\.3': weight has 1 NaN"):
        converted(model, tmp_path)


def test_float_simulation_of_sequences_follows_snntorch(tmp_path: Path) -> None:
    """The float side of a beta != 0 fidelity report is SNNTorch's own dynamics."""
    from spikefleet.convert.compat import lower
    from spikefleet.convert.floatsim import run_float

    lif1 = snn.Leaky(beta=0.8, threshold=0.5)
    lif2 = snn.Leaky(beta=0.6, reset_mechanism="zero")
    hidden, out = fc(16), nn.Linear(16, 3)
    sequences = np.stack([random_frames(5, SMALL, seed=s) for s in range(20)])
    graph = spikefleet.extract(
        Chain(nn.Flatten(), hidden, lif1, out, lif2), to_input(sequences[:, 0])
    )
    float_run = run_float(lower(graph, allow_beta=True).stages, sequences)
    mem1, mem2 = torch.zeros(20, 16), torch.zeros(20, 3)  # each sequence starts at rest
    hidden_spikes = np.zeros(20)
    total = np.zeros((20, 3))
    with torch.no_grad():
        for step in range(5):
            x = to_input(sequences[:, step]).flatten(1)
            spk1, mem1 = lif1(hidden(x), mem1)
            _, mem2 = lif2(out(spk1), mem2)
            hidden_spikes += spk1.sum(1).numpy()
            total += mem2.numpy()
    np.testing.assert_array_equal(float_run.spike_counts["layers.1"], hidden_spikes)
    np.testing.assert_allclose(float_run.outputs, total, rtol=1e-5, atol=1e-5)
