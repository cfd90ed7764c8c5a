"""Compatibility check: refuse what Akida 1.0 cannot run, fold what it can.

The check walks the graph once, before any quantization work, and lowers it
to :class:`Stage` objects: one weighted layer each (BatchNorm and the previous
layer's graded-spike factor already folded into the float weights), with its
pooling and its spiking neuron. Each refusal is an IncompatibleModelError that
names the layer and the way out; things that are fine but worth knowing become
notes in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from spikefleet.convert.graph import (
    AvgPool,
    BatchNorm,
    Conv2d,
    Flatten,
    Graph,
    Leaky,
    Linear,
    MaxPool,
    Node,
    Pad,
    Unsupported,
)
from spikefleet.errors import ConversionError, IncompatibleModelError

F64 = npt.NDArray[np.float64]

_RECURRENT = "recurrent neurons keep state Akida 1.0 does not have; retrain with snn.Leaky(beta=0)"
_REMEDIES = {
    "RLeaky": _RECURRENT,
    "RSynaptic": _RECURRENT,
    "Synaptic": "synaptic current is a second state variable; retrain with snn.Leaky(beta=0)",
    "Alpha": "alpha neurons keep two state variables; retrain with snn.Leaky(beta=0)",
    "Lapicque": "retrain with snn.Leaky(beta=0)",
    "SLSTM": "LSTM cells are not Akida layers; use Conv/Linear + snn.Leaky(beta=0)",
    "SConv2dLSTM": "LSTM cells are not Akida layers; use Conv/Linear + snn.Leaky(beta=0)",
    "LSTM": "LSTM cells are not Akida layers; use Conv/Linear + snn.Leaky(beta=0)",
    "GRU": "recurrent cells are not Akida layers; use Conv/Linear + snn.Leaky(beta=0)",
    "RNN": "recurrent cells are not Akida layers; use Conv/Linear + snn.Leaky(beta=0)",
    "MultiheadAttention": "attention is not an Akida 1.0 layer; use a Conv/Linear chain",
    "functional": "Akida 1.0 runs a plain chain: remove residual/skip paths and other "
    "tensor operations between layers (only flatten and global average pooling are allowed)",
    "CubaLIF": "synaptic current is a second state variable; use LIF/IF with beta=0",
    "branch": "Akida 1.0 runs a plain chain; remove residual/skip paths",
    "recurrent": _RECURRENT,
}


@dataclass(eq=False)
class Stage:
    """One Akida layer in float: potentials = weight (*) input + bias, then pool, then fire.

    ``weight`` is in torch layout (conv ``(out, in, kh, kw)``, dense ``(out, in)``);
    ``in_shape``/``out_shape`` are (C, H, W) (``out_shape`` after pooling).
    ``spike`` is None for the last layer when it is read as potentials.
    """

    name: str
    kind: Literal["conv", "dense"]
    weight: F64
    bias: F64
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    stride: int = 1
    padding: Literal["same", "valid"] = "same"
    pool: Literal["none", "max", "gap"] = "none"
    pool_size: int = 0
    pool_stride: int = 0
    spike: Leaky | None = None
    readout: Leaky | None = None  # the output neuron read as potential (float dynamics only)
    float_pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # torch's (top, bottom, left, right)
    threshold: F64 = field(default_factory=lambda: np.zeros(0))  # per output neuron
    output_gain: F64 | None = None  # graded-spike factor of the output layer, if spiking
    # The model pools the Leaky's spikes (pool after the neuron): equal per frame to
    # Akida's pooled potentials, but the float model keeps membranes per unpooled neuron.
    pool_after: bool = False
    output_node: str = ""  # the graph node whose output is this stage's output


@dataclass
class Lowered:
    stages: list[Stage]
    notes: list[str]
    output: Literal["potential", "spikes"]


def _refuse(node: Node | str, message: str, remedy: str) -> IncompatibleModelError:
    name = node if isinstance(node, str) else node.name
    return IncompatibleModelError(f"layer {name!r}: {message}", layer=name, remedy=remedy)


def _per_channel(node: Leaky, values: np.ndarray, channels: int, what: str) -> F64:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 1:
        return np.full(channels, float(array.reshape(-1)[0]))
    flat = array.reshape(-1)
    if flat.size == channels:
        return flat
    raise _refuse(
        node,
        f"{what} has {flat.size} values for {channels} channels",
        "Akida holds one threshold per output channel: use a scalar or per-channel value",
    )


def lower(graph: Graph, *, allow_beta: bool = False, allow_shift: bool = False) -> Lowered:
    """Check ``graph`` against Akida 1.0 and lower it to stages (see module docstring)."""
    notes: list[str] = []
    nodes = list(graph.nodes)
    for node in nodes:
        for key, value in vars(node).items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                bad = int(np.count_nonzero(~np.isfinite(value)))
                if bad:
                    raise ConversionError(
                        f"layer {node.name!r}: {key} has {bad} NaN or Inf value(s); "
                        "fix the training run (diverged?) and export the weights again"
                    )
        if isinstance(node, Unsupported):
            remedy = _REMEDIES.get(node.kind, "Akida 1.0 runs Conv/Linear + Leaky(beta=0) chains")
            detail = f" ({node.detail})" if node.detail else ""
            raise _refuse(node, f"{node.kind} is not supported{detail}", remedy)
    shape: tuple[int, int, int] = graph.input_shape
    stages: list[Stage] = []
    gain: F64 | None = None  # graded-spike factor of the previous layer, per input channel
    scale = float(graph.input_scale)
    if scale <= 0:
        raise _refuse(
            "input", f"input scale {scale} is not positive", "pass a positive --input-scale"
        )
    index = 0
    while index < len(nodes):
        node = nodes[index]
        if isinstance(node, Flatten):
            index += 1
            continue
        pad_before = (0, 0, 0, 0)
        if isinstance(node, Pad):
            following = nodes[index + 1] if index + 1 < len(nodes) else None
            if not isinstance(following, Conv2d):
                raise _refuse(
                    node, "zero padding not followed by a Conv2d", "pad only before a conv"
                )
            left, right, top, bottom = node.pads
            pad_before = (top, bottom, left, right)
            index += 1
            node = following
        if not isinstance(node, Conv2d | Linear):
            raise _refuse(
                node,
                f"{type(node).__name__} where a Conv2d or Linear layer must come",
                "each Akida layer starts with a weighted layer: Conv/Linear, [BatchNorm], "
                "[pool], Leaky",
            )
        stage = _weighted(
            node, shape, scale if not stages else 1.0, gain, pad_before, allow_shift, notes
        )
        index += 1
        # Optional BatchNorm, pooling before firing, flatten.
        while index < len(nodes) and isinstance(
            nodes[index], BatchNorm | AvgPool | MaxPool | Flatten
        ):
            extra = nodes[index]
            if isinstance(extra, BatchNorm):
                _fold_batchnorm(stage, extra)
                notes.append(
                    f"{extra.name}: BatchNorm folded into {stage.name}'s weights and threshold"
                )
            elif isinstance(extra, AvgPool | MaxPool):
                _pool(stage, extra)
            index += 1
        spike: Leaky | None = None
        candidate = nodes[index] if index < len(nodes) else None
        if isinstance(candidate, Leaky):
            spike = candidate
            stage.output_node = candidate.name
            index += 1
            # Max pooling after firing equals pooling the potentials before it.
            while index < len(nodes) and isinstance(nodes[index], MaxPool | Flatten | AvgPool):
                after = nodes[index]
                if isinstance(after, AvgPool):
                    raise _refuse(
                        after,
                        "average pooling of spikes gives multi-bit values",
                        f"pool before {candidate.name} (Akida pools potentials, then fires)",
                    )
                if isinstance(after, MaxPool):
                    _pool(stage, after)
                    stage.pool_after = True
                    stage.output_node = after.name
                index += 1
        elif index < len(nodes):
            nxt = nodes[index]
            raise _refuse(
                nxt,
                f"{type(nxt).__name__} follows {stage.name} with no Leaky between",
                "Akida layers are joined by spikes: put an snn.Leaky(beta=0) after each "
                "hidden layer",
            )
        last = index >= len(nodes)
        gain = None
        if spike is not None:
            _check_spike(spike, stage, allow_beta, notes)
            channels = stage.out_shape[0]
            threshold = _per_channel(spike, spike.threshold, channels, "threshold")
            graded = _per_channel(
                spike, spike.graded_spikes_factor, channels, "graded_spikes_factor"
            )
            if np.any(graded <= 0):
                raise _refuse(
                    spike,
                    "graded_spikes_factor is not positive",
                    "use graded_spikes_factor=1 (a positive factor folds into the next layer)",
                )
            if np.any(graded != 1):
                notes.append(
                    f"{spike.name}: graded spikes (factor) folded into the next layer's weights"
                )
            stage.threshold = threshold
            if last and graph.output == "spikes":
                stage.spike = spike
                stage.output_gain = graded
            elif last:
                stage.readout = spike
                notes.append(
                    f"{spike.name}: the output layer is read as membrane potential, "
                    "so it runs without activation and its threshold is unused"
                )
            else:
                stage.spike = spike
                gain = graded
        elif not last:
            raise AssertionError("unreachable: a hidden layer without spike was refused above")
        stages.append(stage)
        if stage.kind == "dense" and stage.spike is None and stage.pool != "none":
            raise _refuse(stage.name, "pooling on the output layer", "pool in a hidden layer")
        if stage.kind == "conv" and stage.spike is None and stage.pool == "gap":
            raise _refuse(
                stage.name,
                "global average pooling on a non-spiking output layer",
                "add a Leaky after the pooling and a Linear output layer",
            )
        shape = stage.out_shape
    if not stages:
        raise _refuse("graph", "no Conv2d or Linear layer", "convert a network with weights")
    output: Literal["potential", "spikes"] = (
        "spikes" if stages[-1].spike is not None else "potential"
    )
    return Lowered(stages, notes, output)


def _weighted(
    node: Conv2d | Linear,
    shape: tuple[int, int, int],
    scale: float,
    gain: F64 | None,
    pad_before: tuple[int, int, int, int],
    allow_shift: bool,
    notes: list[str],
) -> Stage:
    weight = np.asarray(node.weight, dtype=np.float64) * scale
    out = weight.shape[0]
    bias = (
        np.zeros(out) if node.bias is None else np.asarray(node.bias, dtype=np.float64).reshape(-1)
    )
    if isinstance(node, Linear):
        features = int(np.prod(shape))
        if weight.ndim != 2 or weight.shape[1] != features:
            raise _refuse(
                node,
                f"weight {weight.shape} does not take {features} inputs {shape}",
                "check the architecture",
            )
        if gain is not None:
            per_feature = np.repeat(gain, features // len(gain)) if len(gain) != features else gain
            weight = weight * per_feature[None, :]
        return Stage(node.name, "dense", weight, bias, shape, (out, 1, 1))
    if node.groups != 1:
        raise _refuse(node, f"grouped/depthwise convolution (groups={node.groups})", "use groups=1")
    if tuple(node.dilation) != (1, 1):
        raise _refuse(node, f"dilation {node.dilation}", "use dilation=1")
    kh, kw = weight.shape[2], weight.shape[3]
    if weight.shape[1] != shape[0]:
        raise _refuse(
            node, f"takes {weight.shape[1]} channels but gets {shape[0]}", "check the architecture"
        )
    sh, sw = node.stride
    if sh != sw:
        raise _refuse(
            node, f"stride {node.stride} differs by axis", "use the same stride on both axes"
        )
    top, bottom, left, right = pad_before
    top, bottom = top + node.padding[0], bottom + node.padding[0]
    left, right = left + node.padding[1], right + node.padding[1]
    float_pad = (top, bottom, left, right)
    out_h = (shape[1] + top + bottom - kh) // sh + 1
    out_w = (shape[2] + left + right - kw) // sw + 1
    padding = _akida_padding(node, shape, (kh, kw), sh, float_pad, (out_h, out_w), allow_shift)
    if padding is None:
        raise _refuse(
            node,
            f"padding (top, bottom, left, right) {float_pad} for a {kh}x{kw} kernel, "
            f"stride {sh}, on a {shape[1]}x{shape[2]} input: Akida cannot pad like that",
            "Akida pads 0 (valid) or TensorFlow-style 'same': total (out-1)*stride+k-size, "
            f"the smaller half first (here {_same_pads(shape, (kh, kw), sh)}); "
            "use nn.ZeroPad2d((left, right, top, bottom)) before a padding=0 Conv2d to match, "
            "or pass allow_shift=True to accept the shifted windows and read the "
            "measured fidelity",
        )
    if padding == "shifted":
        notes.append(
            f"{node.name}: padding {float_pad} differs from Akida's 'same' "
            f"{_same_pads(shape, (kh, kw), sh)}; converted with shifted windows (allow_shift)"
        )
        padding = "same"
    if gain is not None:
        weight = weight * gain[None, :, None, None]
    return Stage(
        node.name,
        "conv",
        weight,
        bias,
        shape,
        (out, out_h, out_w),
        stride=sh,
        padding=padding,
        float_pad=float_pad,
    )


def _same_pads(
    shape: tuple[int, int, int], kernel: tuple[int, int], stride: int
) -> tuple[int, int, int, int]:
    """Akida's 'same' padding (measured with akida 2.19.3): TensorFlow's rule."""
    pads: list[int] = []
    for size, k in ((shape[1], kernel[0]), (shape[2], kernel[1])):
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return (pads[0], pads[1], pads[2], pads[3])


def _akida_padding(
    node: Conv2d,
    shape: tuple[int, int, int],
    kernel: tuple[int, int],
    stride: int,
    float_pad: tuple[int, int, int, int],
    out: tuple[int, int],
    allow_shift: bool,
) -> Literal["same", "valid", "shifted"] | None:
    """Which Akida padding computes exactly the windows torch does (None: neither)."""
    if float_pad == (0, 0, 0, 0):
        return "valid"
    same = _same_pads(shape, kernel, stride)
    same_out = (-(-shape[1] // stride), -(-shape[2] // stride))
    if out != same_out or kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
        return None
    # Only the leading pads place the windows; trailing ones only have to keep the size.
    if (float_pad[0], float_pad[2]) == (same[0], same[2]):
        return "same"
    return "shifted" if allow_shift else None


def _fold_batchnorm(stage: Stage, norm: BatchNorm) -> None:
    """y = gamma (x - mean) / sqrt(var + eps) + beta, folded into weight and bias."""
    gamma = np.asarray(norm.weight, dtype=np.float64)
    factor = gamma / np.sqrt(np.asarray(norm.running_var, dtype=np.float64) + norm.eps)
    if factor.size != stage.weight.shape[0]:
        raise _refuse(
            norm,
            f"has {factor.size} channels, {stage.name} has {stage.weight.shape[0]}",
            "check the architecture",
        )
    # A negative gamma needs no special case: it scales weights and bias alike, and the
    # neuron still compares the folded potential with its own threshold.
    shape = (-1,) + (1,) * (stage.weight.ndim - 1)
    stage.weight = stage.weight * factor.reshape(shape)
    stage.bias = (stage.bias - np.asarray(norm.running_mean)) * factor + np.asarray(norm.bias)


def _pool(stage: Stage, pool: AvgPool | MaxPool) -> None:
    if stage.pool != "none":
        raise _refuse(pool, f"a second pooling on {stage.name}", "Akida pools once per layer")
    if stage.kind != "conv":
        raise _refuse(pool, "pooling after a Linear layer", "pool only after convolutions")
    c, h, w = stage.out_shape
    if isinstance(pool, AvgPool):
        if pool.kernel is not None and tuple(pool.kernel) != (h, w):
            raise _refuse(
                pool,
                f"average pooling {pool.kernel} on a {h}x{w} map",
                "Akida 1.0 averages only globally: use AdaptiveAvgPool2d(1) or max pooling",
            )
        stage.pool = "gap"
        stage.out_shape = (c, 1, 1)
        return
    kh, kw = pool.kernel
    sh, sw = pool.stride
    if kh != kw or sh != sw or tuple(pool.padding) != (0, 0):
        raise _refuse(
            pool,
            f"max pooling kernel {pool.kernel} stride {pool.stride} padding {pool.padding}",
            "use square max pooling without padding",
        )
    out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
    if stage.padding == "same":
        # Akida pads max pooling like its 'same' convolution (see the engine).
        pads = _same_pads(stage.out_shape, (kh, kw), sh)
        akida_out = (-(-h // sh), -(-w // sw))
        if (pads[0], pads[2]) != (0, 0) or akida_out != (out_h, out_w):
            raise _refuse(
                pool,
                f"max pooling {kh}x{kh} stride {sh} on a {h}x{w} map: Akida pads it "
                f"{pads} and gives {akida_out[0]}x{akida_out[1]}, torch gives {out_h}x{out_w}",
                "choose a pool that divides the map evenly (e.g. 2x2 on an even size)",
            )
    stage.pool, stage.pool_size, stage.pool_stride = "max", kh, sh
    stage.out_shape = (c, out_h, out_w)


def _check_spike(spike: Leaky, stage: Stage, allow_beta: bool, notes: list[str]) -> None:
    beta = np.asarray(spike.beta, dtype=np.float64)
    if spike.inhibition:
        raise _refuse(
            spike, "lateral inhibition (winner-take-all)", "retrain with inhibition=False"
        )
    if np.any(beta != 0):
        if not allow_beta:
            raise _refuse(
                spike,
                f"beta={float(beta.reshape(-1)[0]):g}: membrane decay across time steps",
                "Akida neurons keep no membrane between frames: retrain with beta=0, or "
                "pass allow_beta=True to convert as beta=0 and read the "
                "measured fidelity",
            )
        notes.append(
            f"{spike.name}: beta={float(beta.reshape(-1)[0]):g} converted as beta=0 "
            "(no membrane between frames); see the measured fidelity"
        )
    elif spike.reset_mechanism == "subtract":
        notes.append(
            f"{spike.name}: beta=0 with reset 'subtract' is memoryless only when every step "
            "starts at rest: run over time steps without a reset, a neuron that fired at t-1 "
            "is inhibited at t, which Akida's per-frame neurons are not (measured on "
            "calibration sequences when the model runs that way; reset_mechanism='zero' "
            "makes them equal)"
        )
