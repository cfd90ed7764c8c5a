"""Every input path reads the same network into the same program."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from convert_models import REF_ARCH, RefLikeNet, SeedFCNet, random_frames, to_input
from safetensors.torch import save_file

import spikefleet
from spikefleet.convert import ConvertOptions, convert
from spikefleet.convert.graph import Conv2d, Flatten, Leaky, Linear
from spikefleet.errors import ConversionError
from spikefleet.program.codec import encode
from spikefleet.program.model import Provenance

OFFLINE = ConvertOptions(hardware=False)


def program_bytes_without_provenance(path_or_result) -> bytes:
    program = path_or_result.program
    program.provenance = Provenance()
    program.name = "p"
    return encode(program)


def test_extract_records_the_chain_and_reads_the_output_as_potential(tmp_path: Path) -> None:
    model = RefLikeNet()
    graph = spikefleet.extract(model, to_input(random_frames(2)), tmp_path / "m.safetensors")
    kinds = [type(node).__name__ for node in graph.nodes]
    assert kinds == [
        "Pad",
        "Conv2d",
        "Leaky",
        "Conv2d",
        "AvgPool",
        "Flatten",
        "Leaky",
        "Linear",
        "Leaky",
    ]
    assert graph.output == "potential"
    assert graph.input_shape == (2, 34, 34)
    conv1 = graph.nodes[1]
    assert isinstance(conv1, Conv2d) and conv1.stride == (2, 2) and conv1.padding == (0, 0)
    np.testing.assert_array_equal(conv1.weight, model.conv1.weight.detach().numpy())


def test_extract_leaves_the_model_in_its_training_mode(tmp_path: Path) -> None:
    model = RefLikeNet()
    model.train()
    spikefleet.extract(model, to_input(random_frames(1)), tmp_path / "m.safetensors")
    assert model.training


def test_bundle_state_dict_safetensors_and_pt_give_the_same_program(tmp_path: Path) -> None:
    model = RefLikeNet()
    bundle = tmp_path / "bundle.safetensors"
    spikefleet.extract(model, to_input(random_frames(1)), bundle)
    pt = tmp_path / "state.pt"
    torch.save(model.state_dict(), pt)
    plain = tmp_path / "state.safetensors"
    save_file(OrderedDict((k, v.contiguous()) for k, v in model.state_dict().items()), plain)

    from_bundle = program_bytes_without_provenance(convert(bundle, options=OFFLINE))
    from_pt = program_bytes_without_provenance(convert(pt, arch=REF_ARCH, options=OFFLINE))
    from_st = program_bytes_without_provenance(convert(plain, arch=REF_ARCH, options=OFFLINE))
    assert from_bundle == from_pt == from_st


def test_seed_numpy_layout_matches_the_extracted_bundle(tmp_path: Path) -> None:
    model = SeedFCNet()
    directory = tmp_path / "seed"
    directory.mkdir()
    # The seed document's extraction script, as written there.
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            np.save(directory / f"{name}_weight.npy", module.weight.detach().numpy())
            np.save(directory / f"{name}_bias.npy", module.bias.detach().numpy())
        elif type(module).__name__ == "Leaky":
            (directory / f"{name}_threshold.txt").write_text(str(float(module.threshold)))
    frames = random_frames(1, (8, 8, 2))
    bundle = tmp_path / "fc.safetensors"
    spikefleet.extract(model, to_input(frames), bundle)
    options = ConvertOptions(hardware=False, input_shape=(8, 8, 2))
    from_dir = convert(directory, options=options)
    from_bundle = convert(bundle, options=OFFLINE)
    assert program_bytes_without_provenance(from_dir) == program_bytes_without_provenance(
        from_bundle
    )


def test_pt_files_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a pickled module, not tensors
    with pytest.raises(ConversionError, match="refused to unpickle"):
        convert(path, arch=REF_ARCH, options=OFFLINE)


def test_weights_without_architecture_ask_for_one(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save(RefLikeNet().state_dict(), path)
    with pytest.raises(ConversionError, match="--arch"):
        convert(path, options=OFFLINE)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        (
            "Input(34,34,2) Conv(32,3,s2) Leaky Conv(64,5,s2) GAP Leaky FC(10) Leaky",
            "'Conv\\(64,5,s2\\)'.*expected",
        ),
        (
            "Input(34,34,2) Conv(32,3,s2) Leaky Conv(64,3,s2) GAP Leaky Dense(10) Leaky",
            "'Dense\\(10\\)'",
        ),
        ("Input(34,34,2) Conv(32,3,x2) Leaky", "unknown Conv option 'x2'"),
        ("Conv(32,3,s2) Leaky Conv(64,3,s2) GAP Leaky FC(10) Leaky", "input shape is unknown"),
        ("Input(34,34,2) Conv(32,3,s2) Leaky Conv(64,3,s2) GAP Leaky", "does not use: fc1"),
    ],
)
def test_bad_architecture_strings_name_the_token(tmp_path: Path, arch: str, message: str) -> None:
    path = tmp_path / "state.pt"
    torch.save(RefLikeNet().state_dict(), path)
    with pytest.raises(ConversionError, match=message):
        convert(path, arch=arch, options=OFFLINE)


def test_architecture_string_builds_the_expected_graph() -> None:
    from spikefleet.convert.arch import graph_from_arch

    state = OrderedDict((k, v.numpy()) for k, v in RefLikeNet().state_dict().items())
    graph = graph_from_arch(REF_ARCH, state)
    assert [type(n) for n in graph.nodes if not isinstance(n, Flatten)][-2:] == [Linear, Leaky]
    assert graph.input_shape == (2, 34, 34)


def test_importing_spikefleet_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, spikefleet, spikefleet.convert, spikefleet.convert.api;"
        "spikefleet.convert.convert; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_extract_is_the_function_from_both_packages() -> None:
    import spikefleet.convert

    assert callable(spikefleet.extract)
    assert spikefleet.convert.extract is spikefleet.extract


class FunctionalPad(torch.nn.Module):
    """Pads with torch.nn.functional.pad in forward instead of a module."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = RefLikeNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.nn.functional.pad(x, (0, 1, 0, 1)))


def test_functional_padding_is_recorded_as_a_pad(tmp_path: Path) -> None:
    model = FunctionalPad()
    model.inner.pad = torch.nn.Identity()
    dense = torch.rand(2, 2, 34, 34) * 15
    graph = spikefleet.extract(model, dense, tmp_path / "m.safetensors")
    pad = graph.nodes[0]
    assert type(pad).__name__ == "Pad" and pad.pads == (0, 1, 0, 1)  # type: ignore[union-attr]
    exact = RefLikeNet()
    spikefleet.extract(exact, dense, tmp_path / "exact.safetensors")
    ours = convert(tmp_path / "m.safetensors", options=OFFLINE).program.layers
    theirs = convert(tmp_path / "exact.safetensors", options=OFFLINE).program.layers
    for mine, reference in zip(ours[1:], theirs[1:], strict=True):
        np.testing.assert_array_equal(mine.weights, reference.weights)  # type: ignore[union-attr]
        np.testing.assert_array_equal(mine.threshold, reference.threshold)  # type: ignore[union-attr]


def test_functional_padding_of_an_empty_sample_is_ambiguous(tmp_path: Path) -> None:
    model = FunctionalPad()
    model.inner.pad = torch.nn.Identity()
    with pytest.raises(ConversionError, match="ambiguous"):
        spikefleet.extract(model, torch.zeros(1, 2, 34, 34), tmp_path / "m.safetensors")


def test_reference_topology_converts_identically_by_all_four_paths(tmp_path: Path) -> None:
    import nir
    from test_convert_nir import reference_nir

    model = RefLikeNet(seed=4)
    bundle = tmp_path / "ref.safetensors"
    spikefleet.extract(model, to_input(random_frames(1)), bundle)
    pt = tmp_path / "ref.pt"
    torch.save(model.state_dict(), pt)
    directory = tmp_path / "numpy"
    directory.mkdir()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            np.save(directory / f"{name}_weight.npy", module.weight.detach().numpy())
            np.save(directory / f"{name}_bias.npy", module.bias.detach().numpy())
        elif type(module).__name__ == "Leaky":
            (directory / f"{name}_threshold.txt").write_text(str(float(module.threshold)))
    graph = tmp_path / "ref.nir"
    nir.write(graph, reference_nir(model))

    programs = [
        convert(bundle, options=OFFLINE),
        convert(pt, arch=REF_ARCH, options=OFFLINE),
        convert(directory, arch=REF_ARCH, options=OFFLINE),
        # NIR pads symmetrically (torch's padding=1): the same chip program, shifted float.
        convert(graph, options=ConvertOptions(hardware=False, allow_shift=True)),
    ]
    encoded = [program_bytes_without_provenance(result) for result in programs]
    assert all(data == encoded[0] for data in encoded)


class SpikingOutput(torch.nn.Module):
    """Returns the last layer's spikes rather than its membrane."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc1 = torch.nn.Linear(128, 16)
        self.lif1 = spikefleet_leaky()
        self.fc2 = torch.nn.Linear(16, 4)
        self.lif2 = spikefleet_leaky()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = self.fc1(x.flatten(1))
        spk, _ = self.lif1(current, torch.zeros_like(current))  # a fresh membrane per call
        current = self.fc2(spk)
        spk, _ = self.lif2(current, torch.zeros_like(current))
        return spk


def spikefleet_leaky() -> torch.nn.Module:
    import snntorch as snn

    return snn.Leaky(beta=0.0, threshold=0.2)


def test_a_model_returning_spikes_keeps_the_last_activation(tmp_path: Path) -> None:
    from spikefleet.engine import Engine

    model = SpikingOutput()
    frames = random_frames(64, (8, 8, 2))
    assert spikefleet.extract(model, to_input(frames)).output == "potential"  # the default
    graph = spikefleet.extract(
        model, to_input(frames), tmp_path / "m.safetensors", readout="spikes"
    )
    assert graph.output == "spikes"
    program = convert(tmp_path / "m.safetensors", options=OFFLINE).program
    last = program.layers[-1]
    assert last.activation is not None  # type: ignore[union-attr]
    with torch.no_grad():
        expected = model(to_input(frames)).numpy()
    outputs = Engine(program).run(frames).outputs.reshape(64, -1)
    assert (outputs == expected).mean() > 0.95  # 4-bit weights, 1-bit decisions


class HiddenState(torch.nn.Module):
    """Starts its hidden neurons at a membrane of 0.5, which no layer of the chain shows."""

    def __init__(self) -> None:
        super().__init__()
        import snntorch as snn

        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(128, 16)
        self.lif1 = snn.Leaky(beta=0.0, threshold=0.2)
        self.fc2 = torch.nn.Linear(16, 3)
        self.lif2 = snn.Leaky(beta=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cur = self.fc1(x.flatten(1))
        spk, _ = self.lif1(cur, torch.full_like(cur, 0.5))
        cur = self.fc2(spk)
        _, mem = self.lif2(cur, torch.zeros_like(cur))
        return mem


def test_a_model_the_chain_misreads_is_refused_naming_the_first_diverging_layer(
    tmp_path: Path,
) -> None:
    from spikefleet.errors import IncompatibleModelError

    frames = random_frames(8, (8, 8, 2))
    spikefleet.extract(HiddenState(), to_input(frames), tmp_path / "m")
    with pytest.raises(IncompatibleModelError) as caught:
        convert(tmp_path / "m", options=OFFLINE)
    assert caught.value.layer == "fc1"  # lif1's stage, the first that parts from torch
    assert "does not reproduce what torch computed" in str(caught.value)
