"""The akida-sw backend runs programs on BrainChip's own software backend, for real."""

from __future__ import annotations

import numpy as np
import pytest
from support.agent import make_program, random_frames

from spikefleet.engine import Engine
from spikefleet.errors import FrameError
from spikefleet_agent.device.akida_sw import AkidaSoftwareBackend


def test_akida_outputs_and_classes_match_the_engine() -> None:
    program = make_program(4)
    frames = random_frames(16, seed=6)
    result = AkidaSoftwareBackend().load(program).run(frames)
    engine = Engine(program)
    np.testing.assert_array_equal(result.outputs, engine.run(frames).outputs)
    np.testing.assert_array_equal(result.classes, engine.predict(frames))


def test_frames_out_of_the_input_range_are_refused_before_akida() -> None:
    runner = AkidaSoftwareBackend().load(make_program(4))
    with pytest.raises(FrameError, match="uint8"):
        runner.run(np.zeros((1, 34, 34, 2), np.float32))
