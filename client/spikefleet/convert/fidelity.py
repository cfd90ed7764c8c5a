"""The fidelity report: what quantization cost, measured on real data.

The float model (:mod:`spikefleet.convert.floatsim`) and the int4 program on
:class:`spikefleet.engine.Engine` see the same frames; the report gives top-1
agreement, accuracy of both when labels are known, and per layer the spike
rates of both and how closely they agree per sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spikefleet.convert.compat import Stage
from spikefleet.convert.floatsim import FloatRun, run_float
from spikefleet.program.model import Program


@dataclass
class LayerFidelity:
    """Spike rates (fraction of a layer's outputs firing, per frame) float vs int.

    ``spike_agreement`` is the fraction of individual spike decisions (neuron
    and position, per frame) that are the same; None when the float model
    carries membranes across frames (the chip cannot, so frames differ by design).
    """

    name: str
    float_rate: float
    int_rate: float
    rate_agreement: float  # 1 - mean |float rate - int rate| per sample
    spike_agreement: float | None = None


@dataclass
class FidelityReport:
    samples: int = 0
    top1_agreement: float | None = None
    float_accuracy: float | None = None
    int_accuracy: float | None = None
    layers: list[LayerFidelity] = field(default_factory=list)
    weight_bits: int = 4
    notes: list[str] = field(default_factory=list)
    multistep: dict[str, Any] | None = None  # see :class:`Multistep`
    # Whether the program's spikes equal the float reference's on every calibration
    # frame (every spiking layer, every decision) and its answers too: for a model
    # fine-tuned with spikefleet.qat, the proof that the program computes that model.
    certificate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FidelityReport:
        values = dict(data)
        values["layers"] = [LayerFidelity(**layer) for layer in values.get("layers", [])]
        values["notes"] = list(values.get("notes", []))
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def rows(self) -> list[tuple[str, str]]:
        """(measure, value) rows of the summary table."""

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{100 * value:.2f}%"

        rows = [
            ("samples", str(self.samples)),
            ("weight bits", str(self.weight_bits)),
            ("top-1 agreement", pct(self.top1_agreement)),
            ("float accuracy", pct(self.float_accuracy)),
            ("int accuracy", pct(self.int_accuracy)),
        ]
        for layer in self.layers:
            rows.append(
                (
                    f"{layer.name} spike rate float/int",
                    f"{100 * layer.float_rate:.2f}% / {100 * layer.int_rate:.2f}% "
                    f"(rate agreement {100 * layer.rate_agreement:.2f}%)",
                )
            )
            if layer.spike_agreement is not None:
                rows.append((f"{layer.name} spike decisions equal", pct(layer.spike_agreement)))
        if self.certificate is not None:
            proven = self.certificate["spikes_equal"] and self.certificate["top1_equal"]
            rows.append(
                (
                    "certificate",
                    f"{'every' if proven else 'NOT every'} spike and answer equal on "
                    f"{self.certificate['frames']} calibration frames",
                )
            )
        return rows


@dataclass
class Multistep:
    """What Akida's per-frame neurons change for a model that carries membranes over steps.

    SNNTorch runs a sequence with each Leaky's membrane (and its reset) carried
    from step to step; an Akida neuron starts every frame at rest. Measured on
    the calibration sequences: the share of top-1 answers and, per layer, of
    spike decisions that stay the same when every frame starts at rest.
    """

    samples: int
    steps: int
    top1_agreement: float
    spike_agreement: dict[str, float]
    resets: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def note(self) -> str:
        worst = min(self.spike_agreement.items(), key=lambda item: item[1], default=None)
        layer = f"; spike decisions of {worst[0]} equal on {100 * worst[1]:.2f}%" if worst else ""
        if self.top1_agreement == 1.0 and (worst is None or worst[1] == 1.0):
            return (
                f"time steps: per-frame Akida neurons give the same spikes and answers as the "
                f"model's carried membranes on {self.samples} sequences of {self.steps} steps"
            )
        return (
            f"time steps: the model carries membranes across steps (reset "
            f"{'/'.join(self.resets)}), Akida starts every frame at rest: top-1 answers equal "
            f"on {100 * self.top1_agreement:.2f}% of {self.samples} sequences{layer}; to make "
            "them equal retrain with reset_mechanism='zero' and beta=0, or reset the neurons "
            "every step (utils.reset(net) inside the time loop)"
        )


def measure_multistep(stages: list[Stage], sequences: np.ndarray, carried: FloatRun) -> Multistep:
    """Compare SNNTorch's carried run of ``sequences`` (N, T, H, W, C) with per-frame starts."""
    with_state = run_float(stages, sequences, carry_membrane=True, trace=True)
    fresh = run_float(stages, sequences, carry_membrane=False, trace=True)
    agreement: dict[str, float] = {}
    for stage in stages:
        if stage.spike is None:
            continue
        a = np.stack([out for _, out in with_state.trace[stage.name]])
        b = np.stack([out for _, out in fresh.trace[stage.name]])
        agreement[stage.name] = float((a == b).mean())
    resets = sorted({s.spike.reset_mechanism for s in stages if s.spike is not None})
    top1 = float((carried.outputs.argmax(1) == fresh.outputs.argmax(1)).mean())
    return Multistep(len(sequences), int(sequences.shape[1]), top1, agreement, resets)


def measure(
    program: Program,
    stages: list[Stage],
    frames: np.ndarray,
    labels: np.ndarray | None = None,
    notes: list[str] | None = None,
    bits: int = 4,
    float_run: FloatRun | None = None,
    always_on: dict[str, int] | None = None,
) -> FidelityReport:
    """Compare the float stages with ``program`` on frames (N,H,W,C) or sequences (N,T,H,W,C)."""
    from spikefleet.engine import Engine

    float_run = float_run or run_float(stages, frames)
    engine = Engine(program)
    sequence = frames.ndim == 5
    n = frames.shape[0]
    flat = frames.reshape((-1, *frames.shape[-3:])) if sequence else frames
    result = engine.run(np.ascontiguousarray(flat, dtype=np.uint8), spike_counts=True)
    outputs = result.outputs.reshape(len(flat), -1).astype(np.float64)
    if program.output_scales is not None:
        outputs = outputs * program.output_scales.reshape(1, -1)
    steps = flat.shape[0] // n
    int_scores = outputs.reshape(n, steps, -1).sum(axis=1)
    float_top = float_run.outputs.argmax(axis=1)
    int_top = int_scores.argmax(axis=1)
    report = FidelityReport(
        samples=n,
        top1_agreement=float((float_top == int_top).mean()),
        weight_bits=bits,
        notes=list(notes or []),
    )
    if labels is not None:
        truth = np.asarray(labels).reshape(-1)
        report.float_accuracy = float((float_top == truth).mean())
        report.int_accuracy = float((int_top == truth).mean())
    counts = result.spike_counts or {}
    for stage in stages:
        if stage.spike is None or stage.name not in counts:
            continue
        size = int(np.prod(stage.out_shape)) * steps
        fixed = (always_on or {}).get(stage.name, 0)  # bias carriers, not the model's spikes
        int_counts = (np.asarray(counts[stage.name]) - fixed).reshape(n, steps).sum(axis=1)
        float_rate = float_run.spike_counts[stage.name] / size
        int_rate = int_counts / size
        report.layers.append(
            LayerFidelity(
                stage.name,
                float(float_rate.mean()),
                float(int_rate.mean()),
                float(1.0 - np.abs(float_rate - int_rate).mean()),
                _spike_agreement(program, stage.name, float_run, flat),
            )
        )
    agreements = [layer.spike_agreement for layer in report.layers]
    if agreements and all(value is not None for value in agreements):
        report.certificate = {
            "frames": len(flat),
            "spikes_equal": all(value == 1.0 for value in agreements),
            "top1_equal": report.top1_agreement == 1.0,
            "layers": [layer.name for layer in report.layers],
        }
    return report


def _spike_agreement(
    program: Program, name: str, float_run: FloatRun, frames: np.ndarray
) -> float | None:
    """Run the program up to layer ``name`` on the engine and compare spike maps."""
    from spikefleet.engine import Engine

    expected = float_run.spikes.get(name)
    index = next((i for i, layer in enumerate(program.layers) if layer.name == name), None)
    if expected is None or index is None:
        return None
    prefix = Program(name=program.name, layers=program.layers[: index + 1])
    activations = Engine(prefix).run(frames).outputs
    decided = activations[..., : expected.shape[-1]] > 0  # always-on carriers sit after
    return float((decided == expected).mean())
