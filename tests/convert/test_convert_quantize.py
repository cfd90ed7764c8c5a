"""Quantization: integer thresholds keep the float decision, layouts match akida.

A network whose weights are already 4-bit integers times a power-of-two scale
quantizes without loss, so its converted program must agree with the float
SNNTorch model on every spike and every output, exactly.
"""

from __future__ import annotations

from pathlib import Path

import akida
import numpy as np
import pytest
import snntorch as snn
import torch
from convert_models import Chain, RefLikeNet, random_frames, to_input
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import spikefleet
from spikefleet.convert import ConvertOptions, convert
from spikefleet.convert.api import calibration_pick
from spikefleet.convert.quantize import (
    choose_scales,
    cross_validated_scales,
    cross_validated_thresholds,
    integer_threshold,
    weight_range,
)
from spikefleet.engine import Engine

STEP = 0.125


def make_lossless(model: nn.Module, seed: int = 0) -> None:
    """Weights k*STEP with |k| <= 7 and a 7 in every output channel; biases off the grid."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                k = rng.integers(-7, 8, size=module.weight.shape)
                k.reshape(k.shape[0], -1)[:, 0] = 7
                module.weight.copy_(torch.from_numpy(k * STEP))
                if module.bias is not None:
                    bias = rng.integers(-8, 8, size=module.bias.shape) * STEP + STEP / 2
                    module.bias.copy_(torch.from_numpy(bias))


def float_spikes(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    spikes: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, name=name: spikes.__setitem__(name, o[0]))
        for name, m in model.named_modules()
        if isinstance(m, snn.Leaky)
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return spikes


def test_lossless_reference_topology_matches_snntorch_exactly(tmp_path: Path) -> None:
    model = RefLikeNet()
    make_lossless(model)
    with torch.no_grad():
        model.fc1.bias.zero_()  # the output layer has no bias on Akida
        model.conv2.weight.mul_(0.25)  # keep 9x9 average potentials near threshold
    frames = random_frames(64)
    bundle = tmp_path / "m.safetensors"
    spikefleet.extract(model, to_input(frames[:1]), bundle)
    result = convert(bundle, options=ConvertOptions(hardware=False, clip="max"))
    program = result.program

    run = Engine(program).run(frames, spike_counts=True)
    spikes = float_spikes(model, to_input(frames))
    assert run.spike_counts is not None
    np.testing.assert_array_equal(run.spike_counts["conv1"], spikes["lif1"].sum((1, 2, 3)).numpy())
    np.testing.assert_array_equal(run.spike_counts["conv2"], spikes["lif2"].sum(1).numpy())
    assert 0 < spikes["lif2"].mean() < 1  # the test exercises both sides of the threshold
    with torch.no_grad():
        expected = model(to_input(frames)).numpy()
    scaled = run.outputs.reshape(len(frames), -1) * program.output_scales
    np.testing.assert_allclose(scaled, expected, rtol=0, atol=1e-5)


def test_conv_to_fully_connected_uses_akidas_fortran_order(tmp_path: Path) -> None:
    model = Chain(
        nn.Conv2d(2, 4, 3, padding=1),
        snn.Leaky(beta=0.0),
        nn.Flatten(),
        nn.Linear(256, 5, bias=False),
    )
    make_lossless(model)
    frames = random_frames(32, (8, 8, 2))
    bundle = tmp_path / "m.safetensors"
    spikefleet.extract(model, to_input(frames[:1]), bundle)
    program = convert(bundle, options=ConvertOptions(hardware=False, clip="max")).program
    outputs = Engine(program).run(frames).outputs.reshape(32, -1) * program.output_scales
    with torch.no_grad():
        expected = model(to_input(frames)).numpy()
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-50, 50),
    st.floats(-50, 50),
    st.floats(1e-3, 10),
    st.integers(-2000, 2000),
)
def test_integer_threshold_keeps_the_float_decision(
    threshold: float, bias: float, scale: float, potential: int
) -> None:
    integer = int(integer_threshold(np.array([(threshold - bias) / scale]))[0])
    float_fires = scale * potential + bias > threshold
    integer_fires = potential > integer
    if abs(scale * potential + bias - threshold) > 1e-9 * max(1.0, abs(threshold)):
        assert integer_fires == float_fires


def test_rounding_to_nearest_would_be_wrong_here() -> None:
    # (T - b)/s = 2.6: potentials 3 fire, and so must they with the integer threshold.
    assert int(integer_threshold(np.array([2.6]))[0]) == 2
    assert int(integer_threshold(np.array([-2.6]))[0]) == -3
    assert int(integer_threshold(np.array([3.0]))[0]) == 3


@pytest.mark.parametrize("bits", [4, 2, 1])
def test_weights_stay_in_the_range_akida_accepts(bits: int) -> None:
    low, high = weight_range(bits)
    model = akida.Model()
    model.add(akida.InputData(input_shape=(2, 2, 1), input_bits=4))
    model.add(akida.FullyConnected(units=1, weights_bits=bits, activation=False))
    layer = model.layers[1]
    layer.variables["weights"] = np.full((1, 1, 4, 1), low, np.int8)
    layer.variables["weights"] = np.full((1, 1, 4, 1), high, np.int8)
    with pytest.raises(ValueError):
        layer.variables["weights"] = np.full((1, 1, 4, 1), low - 1, np.int8)


def test_mse_clipping_is_never_worse_than_max_on_the_weights() -> None:
    rng = np.random.default_rng(3)
    weight = rng.standard_t(3, size=(16, 72))  # heavy tails, where clipping pays
    low, high = weight_range(4)

    def error(scales: np.ndarray) -> np.ndarray:
        q = np.clip(np.rint(weight / scales[:, None]), low, high)
        return ((q * scales[:, None] - weight) ** 2).mean(axis=1)

    mse, peak = choose_scales(weight, 4, "mse"), choose_scales(weight, 4, "max")
    assert np.all(error(mse) <= error(peak) + 1e-12)
    assert error(mse).mean() < error(peak).mean()


def test_global_average_pooling_threshold_is_on_the_sum_as_akida_computes() -> None:
    """akida fires a GAP layer when the SUM of the potentials exceeds the threshold."""
    rng = np.random.default_rng(1)
    model = akida.Model()
    model.add(akida.InputData(input_shape=(6, 6, 2), input_bits=4))
    model.add(
        akida.Convolutional(
            filters=8,
            kernel_size=(3, 3),
            kernel_stride=(1, 1),
            padding=akida.Padding.Same,
            weights_bits=4,
            act_bits=1,
            pool_type=akida.PoolType.Average,
            pool_size=(-1, -1),
        )
    )
    plain = akida.Model()
    plain.add(akida.InputData(input_shape=(6, 6, 2), input_bits=4))
    plain.add(
        akida.Convolutional(
            filters=8,
            kernel_size=(3, 3),
            kernel_stride=(1, 1),
            padding=akida.Padding.Same,
            weights_bits=4,
            activation=False,
        )
    )
    weights = rng.integers(-7, 8, size=(3, 3, 2, 8)).astype(np.int8)
    model.layers[1].variables["weights"] = weights
    plain.layers[1].variables["weights"] = weights
    threshold = rng.integers(-50, 200, size=8).astype(np.int32)
    model.layers[1].variables["threshold"] = threshold
    x = rng.integers(0, 16, size=(100, 6, 6, 2)).astype(np.uint8)
    sums = plain.forward(x).astype(np.int64).sum(axis=(1, 2))
    fired = model.forward(x).reshape(100, 8).astype(bool)
    np.testing.assert_array_equal(fired, sums > threshold)


def test_output_bias_rides_on_always_on_neurons_exactly(tmp_path: Path) -> None:
    model = RefLikeNet()
    make_lossless(model)
    with torch.no_grad():
        model.conv2.weight.mul_(0.25)
        model.fc1.bias.copy_(torch.arange(-10, 10, 2) * STEP * 2)  # up to 20 weight units
    frames = random_frames(64)
    bundle = tmp_path / "m.safetensors"
    spikefleet.extract(model, to_input(frames[:1]), bundle)
    result = convert(bundle, calibration=frames, options=ConvertOptions(hardware=False, clip="max"))
    program = result.program
    conv2 = program.layers[2]
    assert conv2.weights.shape[-1] == 64 + 3  # type: ignore[union-attr]  # ceil(20 / 7)
    outputs = Engine(program).run(frames).outputs.reshape(len(frames), -1)
    with torch.no_grad():
        expected = model(to_input(frames)).numpy()
    np.testing.assert_allclose(outputs * program.output_scales, expected, rtol=0, atol=1e-5)
    assert result.report is not None and result.report.top1_agreement == 1.0
    conv2_fidelity = result.report.layers[1]
    assert conv2_fidelity.float_rate == conv2_fidelity.int_rate  # carriers not counted
    assert [layer.spike_agreement for layer in result.report.layers] == [1.0, 1.0]


def test_input_scale_folds_into_the_first_layer(tmp_path: Path) -> None:
    """A model trained on counts/15 converts to the program of one trained on counts."""
    scaled = RefLikeNet()
    counts = RefLikeNet()
    with torch.no_grad():
        counts.conv1.weight.div_(15)
    frames = random_frames(1)
    spikefleet.extract(scaled, to_input(frames), tmp_path / "scaled.safetensors")
    spikefleet.extract(counts, to_input(frames), tmp_path / "counts.safetensors")
    options = ConvertOptions(hardware=False, clip="max")
    folded = convert(
        tmp_path / "scaled.safetensors",
        options=ConvertOptions(hardware=False, clip="max", input_scale=1 / 15),
    ).program
    plain = convert(tmp_path / "counts.safetensors", options=options).program
    for mine, theirs in zip(folded.layers[1:], plain.layers[1:], strict=True):
        np.testing.assert_array_equal(mine.weights, theirs.weights)  # type: ignore[union-attr]
        np.testing.assert_array_equal(mine.threshold, theirs.threshold)  # type: ignore[union-attr]


@pytest.mark.parametrize("bits", [2, 1])
def test_low_bit_programs_load_into_akida_and_match_the_engine(tmp_path: Path, bits: int) -> None:
    from spikefleet.brainchip import to_akida

    model = RefLikeNet()
    frames = random_frames(50)
    bundle = tmp_path / "m.safetensors"
    spikefleet.extract(model, to_input(frames[:1]), bundle)
    result = convert(bundle, calibration=frames, options=ConvertOptions(weight_bits=bits))
    program = result.program
    low, high = weight_range(bits)
    for layer in program.layers[1:]:
        assert layer.weights_bits == bits  # type: ignore[union-attr]
        assert low <= int(layer.weights.min()) and int(layer.weights.max()) <= high  # type: ignore[union-attr]
    np.testing.assert_array_equal(
        Engine(program).run(frames).outputs, to_akida(program).forward(frames)
    )
    assert result.report is not None and result.report.weight_bits == bits


def test_graded_spike_factor_folds_into_the_next_layer_exactly(tmp_path: Path) -> None:
    model = Chain(
        nn.Flatten(),
        nn.Linear(128, 16),
        snn.Leaky(beta=0.0, graded_spikes_factor=2.0),
        nn.Linear(16, 5, bias=False),
        snn.Leaky(beta=0.0),
    )
    make_lossless(model)
    frames = random_frames(40, (8, 8, 2))
    bundle = tmp_path / "m.safetensors"
    spikefleet.extract(model, to_input(frames[:1]), bundle)
    result = convert(bundle, options=ConvertOptions(hardware=False, clip="max"))
    assert any("graded spikes" in note for note in result.notes)
    program = result.program
    outputs = Engine(program).run(frames).outputs.reshape(40, -1) * program.output_scales
    with torch.no_grad():
        expected = np.stack([model(to_input(frames[i : i + 1]))[0].numpy() for i in range(40)])
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)


def test_batchnorm_folds_into_weights_and_thresholds(tmp_path: Path) -> None:
    from spikefleet.convert.compat import lower
    from spikefleet.convert.floatsim import run_float

    norm = nn.BatchNorm2d(8)
    model = Chain(
        nn.Conv2d(2, 8, 3, padding=1), norm, snn.Leaky(beta=0.0), nn.Flatten(), nn.Linear(512, 4)
    )
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    frames = random_frames(16, (8, 8, 2))
    graph = spikefleet.extract(model, to_input(frames))
    assert any(type(node).__name__ == "BatchNorm" for node in graph.nodes)
    lowered = lower(graph)
    assert any("BatchNorm folded" in note for note in lowered.notes)
    with torch.no_grad():
        model.eval()
        expected = np.stack([model(to_input(frames[i : i + 1]))[0].numpy() for i in range(16)])
    np.testing.assert_allclose(run_float(lowered.stages, frames).outputs, expected, atol=1e-4)
    result = convert(graph, calibration=frames, options=ConvertOptions(hardware=False))
    assert result.report is not None and result.report.layers[0].spike_agreement > 0.9


def test_frames_of_a_sample_are_independent_for_a_beta_zero_network(tmp_path: Path) -> None:
    """N-DIGITS samples are several frames whose outputs are summed; at beta=0 each
    frame starts from rest (as on Akida), so a lossless program agrees exactly."""
    model = RefLikeNet()
    make_lossless(model)
    with torch.no_grad():
        model.conv2.weight.mul_(0.25)
        model.fc1.bias.mul_(4)  # whole weight units: (k + 1/2) * STEP * 4 / STEP
    samples = np.stack([random_frames(3, seed=s) for s in range(20)])  # (20, 3, 34, 34, 2)
    bundle = tmp_path / "m.safetensors"
    spikefleet.extract(model, to_input(samples[0]), bundle)
    stateless = convert(
        bundle, calibration=samples, options=ConvertOptions(hardware=False, clip="max")
    )
    assert stateless.report is not None and stateless.report.top1_agreement == 1.0
    assert all(layer.float_rate == layer.int_rate for layer in stateless.report.layers)
    assert [layer.spike_agreement for layer in stateless.report.layers] == [1.0, 1.0]
    carried = convert(
        bundle,
        calibration=samples,
        options=ConvertOptions(hardware=False, clip="max", carry_membrane=True),
    )
    assert carried.report is not None
    # Subtract-reset membranes carried across frames fire less than fresh ones.
    assert carried.report.layers[0].float_rate < carried.report.layers[0].int_rate
    assert carried.report.layers[0].spike_agreement is None


@pytest.mark.parametrize("noisy_fold", [0, 1])
def test_a_threshold_moves_only_where_both_folds_confirm_it(noisy_fold: int) -> None:
    """Channel 0's float boundary sits 5 units above the rounded threshold in every row,
    so it moves there. Channel 1's rounded threshold is right; three mislabelled rows
    just below it in one fold (either one) pull that fold's search down, and the other
    fold refutes it: channel 1 keeps the rounded threshold."""
    potentials = np.tile(np.arange(-20.0, 20.0), 2)[:, None].repeat(2, axis=1)
    held = np.arange(len(potentials)) >= 40
    fires = np.stack([potentials[:, 0] > 5, potentials[:, 1] > 0], axis=1)
    fires[np.array([17, 18, 19]) + 40 * noisy_fold, 1] = True
    start = np.array([0, 0], np.int32)
    chosen = cross_validated_thresholds(potentials, fires, start, held)
    assert list(chosen) == [5, 0]
    nothing_held = np.zeros(80, bool)
    assert np.array_equal(cross_validated_thresholds(potentials, fires, start, nothing_held), start)


def test_cross_validated_clipping_keeps_what_both_folds_confirm_and_never_flips_more() -> None:
    """Channel 0 has an outlier weight on an input that never fires: clipping it flips
    fewer decisions whichever fold fits, so it is clipped further than the weights'
    squared error clips it; no channel flips more decisions than that choice."""
    rng = np.random.default_rng(0)
    inputs = (rng.random((4000, 16)) < 0.3).astype(np.float64)
    inputs[:, 0] = 0.0
    weight = rng.uniform(-0.4, 0.4, (3, 16))
    weight[0, 0] = 1.0
    target = inputs @ weight.T
    boundary = np.median(target, axis=0)
    held = np.arange(len(inputs)) % 2 == 1
    chosen = cross_validated_scales(weight, 4, inputs, target, boundary, held)
    base = choose_scales(weight, 4, "mse")
    assert chosen[0] < base[0]

    def flips(scales: np.ndarray) -> np.ndarray:
        q = np.clip(np.rint(weight / scales[:, None]), -7, 7) * scales[:, None]
        error = inputs @ q.T - target
        decided = inputs @ q.T - error.mean(axis=0) > boundary
        return (decided != (target > boundary)).sum(axis=0)

    assert np.all(flips(chosen) <= flips(base))
    nothing_held = np.zeros(len(inputs), bool)
    assert np.array_equal(
        cross_validated_scales(weight, 4, inputs, target, boundary, nothing_held), base
    )


def test_calibration_uses_every_frame_or_whole_samples_spread_evenly() -> None:
    assert np.array_equal(calibration_pick(100, 3, 1024), np.arange(300))
    pick = calibration_pick(1000, 3, 1024)
    assert len(pick) == 1023 and len(np.unique(pick)) == 1023
    samples = np.unique(pick // 3)
    assert len(samples) == 341 and np.all(np.bincount(pick // 3)[samples] == 3)
    assert samples[0] == 0 and samples[-1] == 999  # spread over the whole set
    assert np.diff(samples).max() - np.diff(samples).min() <= 1
    assert np.array_equal(pick, calibration_pick(1000, 3, 1024))


def test_the_same_calibration_frames_give_the_same_program(tmp_path: Path) -> None:
    """The clipping, row draw and folds are fixed by the frames alone: converting twice
    gives identical weights and thresholds (the programs differ only in provenance)."""
    model = RefLikeNet()
    bundle = tmp_path / "m.safetensors"
    spikefleet.extract(model, to_input(random_frames(2)), bundle)
    # 210 frames: conv1 has more output positions than it keeps, so its row draw runs
    samples = np.stack([random_frames(3, seed=s) for s in range(70)])
    options = ConvertOptions(hardware=False)
    first, second = (convert(bundle, calibration=samples, options=options) for _ in range(2))
    for a, b in zip(first.program.layers, second.program.layers, strict=True):
        for field in ("weights", "threshold"):
            if hasattr(a, field):
                assert np.array_equal(getattr(a, field), getattr(b, field))
    assert first.notes == second.notes
