"""NIR graphs, built through nir's own API (SNNTorch's exporter fails on conv
padding and Linear -> Leaky with nir 1.0.8), convert like the same network
given any other way."""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest
from convert_models import RefLikeNet, random_frames, to_input

import spikefleet
from spikefleet.convert import ConvertOptions, convert
from spikefleet.errors import IncompatibleModelError
from spikefleet.program.codec import encode
from spikefleet.program.model import Provenance

DT = 1e-4


def lif(shape: tuple[int, ...], beta: float = 0.0, threshold: float = 1.0) -> nir.LIF:
    """An SNNTorch Leaky(beta) as snntorch's exporter writes it."""
    tau = DT / (1 - beta)
    return nir.LIF(
        tau=np.full(shape, tau),
        r=np.full(shape, tau / DT),
        v_leak=np.zeros(shape),
        v_threshold=np.full(shape, threshold),
    )


def reference_nir(model: RefLikeNet) -> nir.NIRGraph:
    def arr(t) -> np.ndarray:
        return t.detach().numpy().astype(np.float64)

    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([2, 34, 34])}),
            "conv1": nir.Conv2d(
                input_shape=(34, 34),
                weight=arr(model.conv1.weight),
                stride=2,
                padding=1,
                dilation=1,
                groups=1,
                bias=arr(model.conv1.bias),
            ),
            "lif1": lif((32, 17, 17)),
            "conv2": nir.Conv2d(
                input_shape=(17, 17),
                weight=arr(model.conv2.weight),
                stride=2,
                padding=1,
                dilation=1,
                groups=1,
                bias=arr(model.conv2.bias),
            ),
            "pool": nir.AvgPool2d(
                kernel_size=np.array([9, 9]), stride=np.array([9, 9]), padding=np.array([0, 0])
            ),
            "flat": nir.Flatten(input_type={"input": np.array([64, 1, 1])}, start_dim=0),
            "lif2": lif((64,)),
            "fc1": nir.Affine(weight=arr(model.fc1.weight), bias=arr(model.fc1.bias)),
            "lif3": lif((10,)),
            "output": nir.Output(output_type={"output": np.array([10])}),
        },
        edges=[
            ("input", "conv1"),
            ("conv1", "lif1"),
            ("lif1", "conv2"),
            ("conv2", "pool"),
            ("pool", "flat"),
            ("flat", "lif2"),
            ("lif2", "fc1"),
            ("fc1", "lif3"),
            ("lif3", "output"),
        ],
        type_check=False,
    )


def bare(program) -> bytes:
    program.provenance = Provenance()
    program.name = "p"
    return encode(program)


def test_nir_graph_converts_to_the_same_program_as_the_extracted_model(tmp_path: Path) -> None:
    model = RefLikeNet()
    path = tmp_path / "ref.nir"
    nir.write(path, reference_nir(model))
    bundle = tmp_path / "ref.safetensors"
    spikefleet.extract(model, to_input(random_frames(1)), bundle)
    # NIR's symmetric padding=1 is torch's: Akida's windows start one pixel
    # later on the 34-pixel input, so only allow_shift converts it, and then to
    # the very program the exactly-padded model gives.
    with pytest.raises(IncompatibleModelError, match="conv1"):
        convert(path, options=ConvertOptions(hardware=False))
    from_nir = convert(path, options=ConvertOptions(hardware=False, allow_shift=True))
    from_bundle = convert(bundle, options=ConvertOptions(hardware=False))
    assert bare(from_nir.program) == bare(from_bundle.program)


def test_nir_lif_with_leak_reads_as_beta_and_is_refused(tmp_path: Path) -> None:
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([16])}),
            "fc": nir.Affine(weight=np.ones((4, 16)), bias=np.zeros(4)),
            "lif": lif((4,), beta=0.8),
            "fc2": nir.Affine(weight=np.ones((2, 4)), bias=np.zeros(2)),
            "output": nir.Output(output_type={"output": np.array([2])}),
        },
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "fc2"), ("fc2", "output")],
    )
    path = tmp_path / "leaky.nir"
    nir.write(path, graph)
    with pytest.raises(IncompatibleModelError, match=r"beta=0\.8"):
        convert(path, options=ConvertOptions(hardware=False))


def test_nir_recurrent_edge_is_refused(tmp_path: Path) -> None:
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([4])}),
            "fc": nir.Affine(weight=np.eye(4), bias=np.zeros(4)),
            "lif": lif((4,)),
            "rec": nir.Affine(weight=np.eye(4), bias=np.zeros(4)),
            "output": nir.Output(output_type={"output": np.array([4])}),
        },
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "fc"), ("lif", "output")],
        type_check=False,
    )
    path = tmp_path / "rec.nir"
    nir.write(path, graph)
    with pytest.raises(IncompatibleModelError) as info:
        convert(path, options=ConvertOptions(hardware=False))
    assert info.value.layer == "fc" and "fed back" in str(info.value)


def test_nir_synaptic_neuron_is_refused(tmp_path: Path) -> None:
    shape = (4,)
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([8])}),
            "fc": nir.Affine(weight=np.ones((4, 8)), bias=np.zeros(4)),
            "cuba": nir.CubaLIF(
                tau_syn=np.full(shape, 2e-4),
                tau_mem=np.full(shape, 1e-4),
                r=np.ones(shape),
                v_leak=np.zeros(shape),
                v_threshold=np.ones(shape),
            ),
            "output": nir.Output(output_type={"output": np.array([4])}),
        },
        edges=[("input", "fc"), ("fc", "cuba"), ("cuba", "output")],
    )
    path = tmp_path / "cuba.nir"
    nir.write(path, graph)
    with pytest.raises(IncompatibleModelError, match="CubaLIF") as info:
        convert(path, options=ConvertOptions(hardware=False))
    assert info.value.layer == "cuba"
