"""Converted programs against BrainChip's own engine: same outputs, and a real
AKD1000 mapping that refuses networks the chip cannot hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import snntorch as snn
from convert_models import Chain, RefLikeNet, random_frames, to_input
from torch import nn

import spikefleet
from spikefleet.brainchip import to_akida
from spikefleet.convert import ConvertOptions, convert
from spikefleet.engine import Engine
from spikefleet.errors import IncompatibleModelError


def test_converted_program_runs_identically_on_the_engine_and_in_akida(tmp_path: Path) -> None:
    model = RefLikeNet(seed=3)
    frames = random_frames(200, seed=9)
    bundle = tmp_path / "ref.safetensors"
    spikefleet.extract(model, to_input(frames[:1]), bundle)
    result = convert(bundle, calibration=frames[:100])
    program = result.program
    ours = Engine(program).run(frames).outputs
    theirs = to_akida(program).forward(frames)
    np.testing.assert_array_equal(ours, theirs)
    assert result.report is not None and result.report.top1_agreement is not None
    assert program.hardware is not None and program.hardware.device == "AKD1000"
    assert len(program.hardware.program_data) > 0 and program.fbz


def test_a_network_too_large_for_akd1000_is_refused_naming_the_layer(tmp_path: Path) -> None:
    model = Chain(
        nn.Conv2d(2, 16, 3, padding=1),
        snn.Leaky(beta=0.0),
        nn.Flatten(),
        nn.Linear(16 * 64 * 64, 4),
    )
    frames = random_frames(1, (64, 64, 2))
    bundle = tmp_path / "wide.safetensors"
    spikefleet.extract(model, to_input(frames), bundle)
    with pytest.raises(IncompatibleModelError, match="does not map onto an AKD1000") as info:
        convert(bundle)
    assert info.value.layer == "layers.3"
    convert(bundle, options=ConvertOptions(hardware=False))  # the check is the mapping's
