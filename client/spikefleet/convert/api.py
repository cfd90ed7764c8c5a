"""``convert()``: a model in any supported form -> an Akida program, with its fidelity.

Order of work: read the model into the graph IR, check and lower it (refusals
happen here, before anything expensive), run the float model on calibration
data, quantize, check the AKD1000 fit, measure fidelity on the engine, encode
and sign.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spikefleet import __version__
from spikefleet.convert.check import check_reference
from spikefleet.convert.compat import lower
from spikefleet.convert.fidelity import FidelityReport, measure, measure_multistep
from spikefleet.convert.floatsim import run_float
from spikefleet.convert.graph import Graph, OutputKind
from spikefleet.convert.loaders import load_graph, model_name, source_digest
from spikefleet.convert.quantize import quantize_stages
from spikefleet.errors import (
    AkidaUnavailableError,
    ConversionError,
    IncompatibleModelError,
    SpikefleetError,
)
from spikefleet.events.spec import InputSpec, default_input_spec
from spikefleet.program.model import InputData, Program, Provenance

log = logging.getLogger(__name__)  # a library: the application decides where records go

CONVERTER_VERSION = f"spikefleet-convert {__version__}"

Progress = Callable[[str, int, int], None]
"""progress(step description, steps done, steps total)."""

_STEPS = 6
_CALIBRATION_FRAMES = 512  # bounds time (conversion < 2 s for the reference model)


def calibration_pick(samples: int, per_sample: int, limit: int) -> np.ndarray:
    """Which calibration frames the quantizer fits (flat indices, sample-major).

    Every frame when they fit in ``limit``; else all frames of whole samples spread
    evenly over the set (a fixed stride, no random draw: the same calibration set
    always gives the same program, and a set sorted by class stays stratified).
    """
    total = samples * per_sample
    if total <= limit:
        return np.arange(total)
    keep = max(1, min(samples, limit // per_sample))
    chosen = np.unique(np.linspace(0, samples - 1, keep).round().astype(np.int64))
    return (chosen[:, None] * per_sample + np.arange(per_sample)).reshape(-1)[:limit]


@dataclass
class ConvertOptions:
    """How to convert; every field has a safe default.

    ``input_shape`` is (height, width, channels) for weights that carry none;
    ``input_scale`` overrides the graph's (what the model was trained on per
    input count); ``allow_beta`` converts beta != 0 neurons as beta = 0; ``allow_shift``
    accepts convolution padding Akida can only approximate with shifted windows;
    ``carry_membrane`` says whether the float model keeps its membranes across
    the frames of a calibration sequence (None: only when some beta != 0);
    ``readout`` overrides what the last layer's result is (its membrane
    ``"potential"``, the default of every path, or its ``"spikes"``);
    ``clip`` chooses weight clipping per channel ("auto": the weights' squared
    error, and with calibration a spiking layer's channel clipped for the fewest
    flipped spike decisions where 2-fold cross-validation confirms it, the
    read-out at "max"; "mse": the fewest-flips search unvalidated; "max");
    ``input_spec`` says how events become the
    model's frames (default: the one the bundle carries, else
    :func:`~spikefleet.events.spec.default_input_spec`, with a note); ``sign_key`` is a
    :class:`spikefleet.program.signing.SigningKey`; ``hardware`` maps onto a
    virtual AKD1000 and stores the .fbz when akida is installed.
    """

    weight_bits: int = 4
    input_bits: int = 4
    input_shape: tuple[int, int, int] | None = None
    input_scale: float | None = None
    allow_beta: bool = False
    allow_shift: bool = False
    carry_membrane: bool | None = None
    clip: Literal["auto", "mse", "max"] = "auto"
    name: str | None = None
    class_names: list[str] = field(default_factory=list)
    sign_key: Any = None
    hardware: bool = True
    nir_dt: float = 1e-4
    input_spec: InputSpec | None = None
    readout: OutputKind | None = None


@dataclass
class ConversionResult:
    """The program, its fidelity report (None without calibration data), and the
    bytes to store: the encoded program, signed when a key was given."""

    program: Program
    report: FidelityReport | None
    notes: list[str]
    data: bytes
    signed: bool
    seconds: float


def convert(
    source: str | os.PathLike[str] | Graph,
    *,
    arch: str | None = None,
    calibration: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    options: ConvertOptions | None = None,
    progress: Progress | None = None,
) -> ConversionResult:
    """Convert ``source`` (bundle, state_dict + ``arch``, numpy dir, .nir, or a Graph).

    ``calibration`` are uint8 frames (N, H, W, C), or samples of T frames
    (N, T, H, W, C) whose outputs are summed (N-DIGITS' one frame per saccade),
    used to choose clipping and measure fidelity; ``labels`` (N,) adds accuracy.
    """
    options = options or ConvertOptions()
    started = time.perf_counter()

    def step(done: int, description: str) -> None:
        if progress is not None:
            progress(description, done, _STEPS)

    step(0, "reading model")
    if isinstance(source, Graph):
        graph, digest, default_name = source, "", "model"
    else:
        input_shape = options.input_shape
        if input_shape is None and calibration is not None:
            h, w, c = calibration.shape[-3:]
            input_shape = (int(h), int(w), int(c))
        graph = load_graph(source, arch, input_shape, options.nir_dt)
        digest, default_name = source_digest(source), model_name(source)
    if options.input_scale is not None:
        graph = replace(graph, input_scale=options.input_scale)
    if options.readout is not None:
        if options.readout not in ("potential", "spikes"):
            raise ConversionError(f"readout {options.readout!r}: choose potential or spikes")
        graph = replace(graph, output=options.readout)
    calibration = _check_calibration(graph, calibration, labels, options.input_bits)

    step(1, "checking compatibility")
    lowered = lower(graph, allow_beta=options.allow_beta, allow_shift=options.allow_shift)
    notes = list(lowered.notes)
    checked = check_reference(graph, lowered.stages)
    if checked is not None:
        notes.append(checked.note())

    step(2, "running the float model")
    carry = options.carry_membrane
    if carry is None and checked is not None and checked.semantics != "single":
        carry = checked.semantics == "sequence"
    if carry is None:
        carry = any(
            np.any(np.asarray(neuron.beta) != 0)
            for stage in lowered.stages
            for neuron in (stage.spike, stage.readout)
            if neuron is not None
        )
    float_run = (
        run_float(lowered.stages, calibration, carry_membrane=carry)
        if calibration is not None
        else None
    )
    multistep = None
    if calibration is not None and float_run is not None and carry and calibration.ndim == 5:
        multistep = measure_multistep(lowered.stages, calibration, float_run)
        notes.append(multistep.note())
    calibration_frames = float_spikes = None
    if calibration is not None and float_run is not None:
        # Calibrate on independent frames (the first of each sample when membranes carry).
        flat = calibration[:, 0] if calibration.ndim == 5 and carry else calibration
        flat = flat.reshape(-1, *calibration.shape[-3:])
        per_sample = 1 if len(flat) == len(calibration) else calibration.shape[1]
        pick = calibration_pick(len(calibration), per_sample, _CALIBRATION_FRAMES)
        calibration_frames = flat[pick]
        spiking = [stage.name for stage in lowered.stages if stage.spike is not None]
        if all(name in float_run.spikes for name in spiking):  # frames were independent
            float_spikes = [float_run.spikes[name][pick] for name in spiking]

    step(3, "quantizing")
    quantized = quantize_stages(
        lowered.stages,
        bits=options.weight_bits,
        input_bits=options.input_bits,
        clip=options.clip,
        calibration=calibration_frames,
        float_spikes=float_spikes,
    )
    notes.extend(quantized.notes)
    program = Program(
        name=options.name or default_name,
        layers=quantized.layers,
        labels=list(options.class_names),
        output_scales=quantized.output_scales,
    )
    program.input_spec = _input_spec(program, options.input_spec or graph.input_spec, notes)

    step(4, "mapping onto AKD1000")
    if options.hardware:
        notes.extend(_attach_hardware(program))

    step(5, "measuring fidelity")
    report = None
    if calibration is not None:
        report = measure(
            program,
            lowered.stages,
            calibration,
            labels,
            notes,
            options.weight_bits,
            float_run,
            quantized.always_on,
        )
        if multistep is not None:
            report.multistep = multistep.to_dict()
    program.provenance = Provenance(
        source_sha256=digest,
        converter_version=CONVERTER_VERSION,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        fidelity=report.to_dict() if report is not None else {"notes": notes},
    )
    data, signed = _encode(program, options.sign_key)
    step(6, "done")
    seconds = time.perf_counter() - started
    log.info("converted %s in %.3f s (signed: %s)", program.name, seconds, signed)
    return ConversionResult(program, report, notes, data, signed, seconds)


def _input_spec(program: Program, spec: InputSpec | None, notes: list[str]) -> InputSpec:
    """The spec to record: the given one (clipped to the input bits unless it says
    otherwise), or the documented default, with a note."""
    if spec is None:
        spec = default_input_spec(program.input.shape, program.input.bits)
        notes.append(
            "no input spec given: recorded the default one "
            f"({spec.describe()}); pass input_spec= (or --input-spec FILE) to record how "
            "the model's frames are made from events"
        )
        return spec
    if spec.clip_bits is None:
        spec = spec.with_clip_bits(program.input.bits)
    if spec.input_shape != tuple(program.input.shape):
        raise ConversionError(
            f"the input spec makes frames of {spec.input_shape} (H, W, C) but the model takes "
            f"{tuple(program.input.shape)}: fix the spec's sensor_size, crop, downsample or "
            "polarity"
        )
    if spec.clip_bits is not None and spec.clip_bits > program.input.bits:
        raise ConversionError(
            f"the input spec clips counts to {spec.clip_bits} bits but the program's input "
            f"has {program.input.bits}; set clip_bits to at most {program.input.bits}"
        )
    return spec


def _check_calibration(
    graph: Graph, calibration: np.ndarray | None, labels: np.ndarray | None, bits: int
) -> np.ndarray | None:
    if calibration is None:
        if labels is not None:
            raise ConversionError("labels were given without calibration frames")
        return None
    frames = np.asarray(calibration)
    c, h, w = graph.input_shape
    if frames.ndim not in (4, 5) or frames.shape[-3:] != (h, w, c):
        raise ConversionError(
            f"calibration frames have shape {frames.shape}; the model takes (N, {h}, {w}, {c}) "
            f"or (N, T, {h}, {w}, {c})"
        )
    if frames.dtype != np.uint8 or (frames.size and int(frames.max()) >= 2**bits):
        raise ConversionError(
            f"calibration frames must be uint8 counts below {2**bits} "
            "(spikefleet.events.to_frames makes them)"
        )
    if labels is not None and len(np.asarray(labels).reshape(-1)) != len(frames):
        raise ConversionError(
            f"{len(np.asarray(labels).reshape(-1))} labels for {len(frames)} calibration samples"
        )
    return frames


def _attach_hardware(program: Program) -> list[str]:
    """Map onto a virtual AKD1000 and store the .fbz; refuse networks that do not fit."""
    try:
        from spikefleet.brainchip import map_hardware, save_fbz
    except ImportError:
        return ["AKD1000 mapping skipped: spikefleet.brainchip is not available"]
    try:
        hardware = map_hardware(program, device="AKD1000")
    except AkidaUnavailableError:
        return ["AKD1000 mapping skipped: akida is not installed"]
    except IncompatibleModelError:
        raise
    except SpikefleetError as exc:
        layer, remedy = hardware_remedy(program, str(exc))
        raise IncompatibleModelError(
            f"layer {layer!r} does not map onto an AKD1000: {_akida_reason(str(exc))}",
            layer=layer,
            remedy=remedy,
        ) from exc
    program.hardware = hardware
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "program.fbz"
        save_fbz(program, path)
        program.fbz = path.read_bytes()
    return [f"AKD1000: maps onto {hardware.np_count} NPs"]


def _akida_reason(message: str) -> str:
    return message.split(": ", 1)[1] if "does not map onto" in message else message


_NO_HARDWARE = "or pass --no-hardware (hardware=False) to convert for the software backend only"


def hardware_remedy(program: Program, message: str) -> tuple[str, str]:
    """(layer, fix) for akida's mapping refusal: the change to the model that makes it map."""
    from spikefleet.program.model import Convolutional, Padding, Pooling

    layers = [layer for layer in program.layers if not isinstance(layer, InputData)]
    named = re.search(r"[Ll]ayer '?([A-Za-z0-9_.\-]+)'?", message)
    by_name = {layer.name: layer for layer in layers}
    culprit = by_name.get(named.group(1)) if named else None
    convs = [layer for layer in layers if isinstance(layer, Convolutional)]
    if "padding same" in message.lower():
        culprit = culprit or next((c for c in convs if c.padding is Padding.VALID), None)
        if isinstance(culprit, Convolutional):
            k = culprit.kernel_size[0]
            return culprit.name, (
                f"AKD1000 convolutions pad 'same': give the {k}x{k} convolution "
                f"padding={k // 2} (stride 1), or nn.ZeroPad2d before a stride-2 one, and "
                f"retrain, {_NO_HARDWARE}"
            )
    if "stride 2" in message.lower():
        culprit = culprit or next(
            (c for c in convs if c.stride == 2 and c.kernel_size[0] != 3), None
        )
        if culprit is not None:
            return culprit.name, (
                f"AKD1000 runs stride 2 only with 3x3 kernels: use a 3x3 kernel there, or "
                f"stride 1 and 2x2 max pooling, {_NO_HARDWARE}"
            )
    if "max pooling cannot be the last" in message or "FullyConnected" in message:
        pooled = [c for c in convs if c.pooling is Pooling.MAX]
        culprit = culprit or (pooled[-1] if pooled else None)
        if culprit is not None:
            return culprit.name, (
                "on AKD1000 a max-pooled convolution must feed another convolution: pool an "
                f"earlier layer, or add a convolution after it, {_NO_HARDWARE}"
            )
    if "average pooling" in message.lower():
        culprit = culprit or next((c for c in convs if c.pooling is Pooling.GLOBAL_AVERAGE), None)
        if culprit is not None:
            return culprit.name, (
                "AKD1000 averages maps of at most 32x32: downsample (stride 2) before the "
                f"global pooling, {_NO_HARDWARE}"
            )
    if "pooling size" in message.lower():
        return (culprit.name if culprit else "network"), f"use 2x2 max pooling, {_NO_HARDWARE}"
    return (culprit.name if culprit else "network"), (
        f"use fewer filters or smaller inputs on that layer, {_NO_HARDWARE}"
    )


def _encode(program: Program, key: Any) -> tuple[bytes, bool]:
    from spikefleet.program.codec import encode

    data = encode(program)
    if key is None:
        return data, False
    from spikefleet.program.signing import sign

    return sign(data, key).to_bytes(), True
