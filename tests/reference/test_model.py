"""The reference network: the pinned topology, stateless beta=0 steps, safe weight files."""

from __future__ import annotations

import subprocess
import sys
from typing import cast

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from spikefleet.errors import SpikefleetError
from spikefleet.reference import ReferenceNet, frames_to_input, load_reference_model
from spikefleet.reference.weights import save_weights


def test_topology_is_the_pinned_one():
    model = ReferenceNet()
    children = dict(model.named_children())
    assert list(children) == [
        "pad1", "conv1", "lif1", "conv2", "lif2", "flat", "drop", "fc1", "lif3"
    ]  # fmt: skip
    assert isinstance(children["pad1"], nn.ZeroPad2d)
    assert tuple(children["pad1"].padding) == (0, 1, 0, 1)  # left, right, top, bottom
    for name, channels, padding in (("conv1", (2, 32), (0, 0)), ("conv2", (32, 64), (1, 1))):
        conv = children[name]
        assert isinstance(conv, nn.Conv2d)
        assert (conv.in_channels, conv.out_channels) == channels
        assert conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.padding == padding
    assert isinstance(children["fc1"], nn.Linear)
    assert (children["fc1"].in_features, children["fc1"].out_features) == (64 * 9 * 9, 10)
    for name in ("lif1", "lif2", "lif3"):
        assert isinstance(children[name], snn.Leaky)
        assert float(cast(torch.Tensor, children[name].beta)) == 0.0


def test_conv1_windows_start_where_akidas_same_padding_starts_them():
    # Akida's 'same' on 34 px at stride 2 pads 0 before, 1 after (docs/akida-semantics.md):
    # output (0, 0) sees input rows/cols 0..2, the last output sees 32, 33 and the pad.
    model = ReferenceNet().eval()
    with torch.no_grad():
        assert model.conv1.bias is not None
        model.conv1.weight.zero_()
        model.conv1.bias.zero_()
        model.conv1.weight[0, 0, 0, 0] = 1.0  # the window's top-left tap
        x = torch.zeros(1, 2, 34, 34)
        x[0, 0, 0, 0] = 5.0
        x[0, 0, 32, 32] = 7.0
        current = model.conv1(model.pad1(x))
    assert current.shape == (1, 32, 17, 17)
    assert float(current[0, 0, 0, 0]) == 5.0 and float(current[0, 0, 16, 16]) == 7.0
    assert float(current[0, 0].sum()) == 12.0


def test_one_step_is_stateless_spiking_and_reads_lif3_membrane():
    torch.manual_seed(0)
    model = ReferenceNet(dropout=0.5).eval()
    x = torch.rand(4, 2, 34, 34) * 15
    with torch.no_grad():
        spk1, spk2, mem3 = model.forward_spikes(x)
        again = model(x)
        # spike = potential > threshold; the output is fc1's current on conv2's flat spikes
        np.testing.assert_array_equal(
            spk1.numpy(), (model.conv1(model.pad1(x)) > 1.0).float().numpy()
        )
        np.testing.assert_array_equal(spk2.numpy(), (model.conv2(spk1) > 1.0).float().numpy())
        assert spk2.shape == (4, 64, 9, 9)
        torch.testing.assert_close(mem3, model.fc1(spk2.flatten(1)))
    torch.testing.assert_close(mem3, again)  # no state carried between calls, no dropout in eval
    assert set(np.unique(spk1.numpy())) <= {0.0, 1.0}
    assert set(np.unique(spk2.numpy())) <= {0.0, 1.0}


def test_frames_to_input_is_nchw_float_counts():
    frames = np.zeros((2, 34, 34, 2), np.uint8)
    frames[1, 3, 5, 1] = 9
    x = frames_to_input(frames)
    assert x.shape == (2, 2, 34, 34) and x.dtype == torch.float32
    assert float(x[1, 1, 3, 5]) == 9.0 and float(x.sum()) == 9.0


def test_weights_round_trip_through_safetensors(tmp_path):
    model = ReferenceNet()
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    loaded = load_reference_model(path)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_bad_weight_files_are_named(tmp_path):
    with pytest.raises(SpikefleetError, match="no reference weights"):
        load_reference_model(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(SpikefleetError, match="ReferenceNet weights"):
        load_reference_model(tmp_path / "junk.safetensors")


def test_events_datasets_and_reference_imports_stay_torch_free():
    code = (
        "import sys, spikefleet, spikefleet.events, spikefleet.datasets.ndigits, "
        "spikefleet.reference, spikefleet.cli.data_commands; "
        "print(sorted(m for m in ('torch', 'sklearn', 'snntorch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
