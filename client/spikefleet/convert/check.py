"""The float reference is the user's model: replay what torch computed, and compare.

``spikefleet.extract`` records every neuron's spikes and membrane, step by step,
on the sample it was given (:class:`~spikefleet.convert.graph.Reference`). Before
anything is quantized, the converter runs the same inputs through its own
reading of the graph (the lowered float stages) and must reproduce them:
spikes exactly (a decision may differ only where torch's membrane sits within
float rounding of the threshold), membranes to float tolerance. A misread
model (the read-out, a pooling order, a reset rule, an operation hidden in a
custom forward) then cannot pass as faithful: the check names the first layer
where the two part.

For a sample of several time steps the check also finds out how the model
treats time: SNNTorch's own way (membranes and resets carried across steps)
or a reset every step. The converter then measures fidelity the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from spikefleet.convert.compat import Stage
from spikefleet.convert.floatsim import run_float
from spikefleet.convert.graph import Graph, Reference
from spikefleet.errors import IncompatibleModelError

Semantics = Literal["single", "sequence", "per-step"]

_RTOL = 1e-4


@dataclass
class ReferenceCheck:
    """How the recorded model runs over time, and what the check compared.

    ``semantics``: ``single`` (one step recorded), ``sequence`` (membranes carry
    across steps, SNNTorch's time loop) or ``per-step`` (every step from rest).
    """

    semantics: Semantics
    steps: int
    samples: int
    layers: int

    def note(self) -> str:
        how = {
            "single": "one time step",
            "sequence": f"{self.steps} time steps with membranes carried across them",
            "per-step": f"{self.steps} time steps, each from rest",
        }[self.semantics]
        return (
            f"float reference: the converter's reading reproduces the torch model's own "
            f"spikes and membranes on the extract sample ({self.samples} samples, {how}, "
            f"{self.layers} layers)"
        )


@dataclass
class _Divergence:
    layer: str
    detail: str


def _frames(ref: Reference, graph: Graph) -> np.ndarray:
    """Recorded inputs (T, N, C, H, W) -> float frames (N, T, H, W, C) in count units."""
    inputs = np.asarray(ref.inputs, dtype=np.float32) / np.float32(graph.input_scale)
    return inputs.transpose(1, 0, 3, 4, 2)


def _nhwc(recorded: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A recorded (N, C, H, W) or (N, F) tensor in the float model's (N, H, W, C) layout."""
    if recorded.ndim == 4:
        return recorded.transpose(0, 2, 3, 1)
    return recorded.reshape(like.shape)


def _compare(
    stages: list[Stage], ref: Reference, frames: np.ndarray, carry: bool
) -> _Divergence | None:
    run = run_float(stages, frames, carry_membrane=carry, trace=True)
    for stage in stages:
        neuron = stage.spike or stage.readout
        traced = run.trace.get(stage.name)
        if traced is None:
            continue
        for step, (mem, out) in enumerate(traced):
            threshold = stage.threshold.reshape(1, 1, 1, -1) if stage.threshold.size else 0.0
            recorded_mem = None
            if neuron is not None and neuron.name in ref.membranes:
                raw = ref.membranes[neuron.name][step]
                if raw.size == mem.size:
                    recorded_mem = _nhwc(raw, mem)
            if recorded_mem is None and neuron is None and stage.name in ref.outputs:
                recorded_mem = _nhwc(ref.outputs[stage.name][step], mem)
            tolerance = _RTOL * max(1.0, float(np.abs(mem).max(initial=0.0)))
            if recorded_mem is not None:
                error = float(np.abs(recorded_mem - mem).max(initial=0.0))
                if error > tolerance:
                    return _Divergence(
                        stage.name,
                        f"membrane differs by up to {error:.4g} at step {step}",
                    )
            if stage.spike is None:
                continue
            name = stage.output_node or stage.spike.name
            if name not in ref.outputs:
                continue
            recorded = _nhwc(ref.outputs[name][step], out) != 0
            differ = recorded != (out != 0)
            if recorded_mem is not None and recorded_mem.shape == differ.shape:
                differ &= (
                    np.abs(recorded_mem - threshold) > tolerance
                )  # float ties may go either way
            if np.any(differ):
                return _Divergence(
                    name,
                    f"{int(differ.sum())} of {differ.size} spikes differ at step {step}",
                )
    return None


def check_reference(graph: Graph, stages: list[Stage]) -> ReferenceCheck | None:
    """Compare the lowered stages with the recorded torch outputs (None: nothing recorded)."""
    ref = graph.reference
    if ref is None or ref.inputs.ndim != 5:
        return None
    frames = _frames(ref, graph)
    steps, samples = int(ref.inputs.shape[0]), int(ref.inputs.shape[1])
    layers = len(stages)
    if steps == 1:
        found = _compare(stages, ref, frames[:, 0], carry=False)
        if found is None:
            return ReferenceCheck("single", 1, samples, layers)
    else:
        found = _compare(stages, ref, frames, carry=True)
        if found is None:
            return ReferenceCheck("sequence", steps, samples, layers)
        if _compare(stages, ref, frames, carry=False) is None:
            return ReferenceCheck("per-step", steps, samples, layers)
    raise IncompatibleModelError(
        f"layer {found.layer!r}: the converter's reading of the model does not reproduce "
        f"what torch computed on the extract sample ({found.detail})",
        layer=found.layer,
        remedy="the forward does something between the recorded layers that the chain "
        "does not show (scaling, adding, state changed mid-sequence): make it a plain chain "
        "of Conv/Linear, [BatchNorm], [pool], Leaky layers and extract again",
    )
