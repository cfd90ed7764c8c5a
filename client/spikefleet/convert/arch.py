"""Architecture strings: the layer chain for weights that arrive without one.

A state_dict (or the seed document's numpy directory) holds tensors but not the
order, strides, paddings or pooling that join them. The string supplies those::

    Input(34,34,2) Conv(32,3,s2) Leaky Conv(64,3,s2) GAP Leaky FC(10) Leaky

Tokens (case-insensitive, separated by spaces, commas or ``->``):

- ``Input(H,W,C)``: input frame shape; optional when the caller gives one.
- ``Conv(filters,kernel[,sN][,same|valid|pN])``: Conv2d; stride 1 and ``same``
  padding ((kernel-1)/2, torch's ``padding=k//2``) unless given.
- ``FC(units)``: Linear; a spatial input is flattened in torch's (C, H, W) order.
- ``Leaky`` or ``Leaky(threshold=1.0,beta=0.0)``: values are used only when the
  weights carry no Leaky buffers (SNNTorch 1.0 state_dicts do).
- ``BN``: BatchNorm2d/BatchNorm1d (folded by the converter).
- ``GAP``: global average pooling; ``MaxPool(k[,sN])``: max pooling (stride k).
- ``Flatten``: explicit flatten (implied before FC anyway).
- ``Pad(left,right,top,bottom)``: zero padding before a Conv (``nn.ZeroPad2d``).
- ``Readout(potential|spikes)``: last token; what the model's result is, the last
  Leaky's membrane potential (the default, also ``membrane``) or its spikes.

Weights are bound in order: each Conv/FC takes the next tensor group with a
``weight`` of matching rank, each BN the next group with ``running_mean``, each
Leaky the next group with ``threshold``. Groups are ``prefix.param`` keys.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

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
)
from spikefleet.errors import ConversionError

_TOKEN = re.compile(r"\s*(?:->|,)?\s*([A-Za-z]+)(\([^)]*\))?")
_KNOWN = ("input", "conv", "fc", "leaky", "bn", "gap", "maxpool", "flatten", "pad", "readout")
_READOUTS = {
    "potential": "potential",
    "membrane": "potential",
    "mem": "potential",
    "spikes": "spikes",
}


@dataclass
class Token:
    kind: str
    args: list[str] = field(default_factory=list)
    text: str = ""
    position: int = 0

    def where(self) -> str:
        return f"architecture token {self.position} {self.text!r}"


def parse_arch(text: str) -> list[Token]:
    """Split an architecture string into tokens; ConversionError names a bad one."""
    tokens: list[Token] = []
    index = 0
    text = text.strip()
    while index < len(text):
        match = _TOKEN.match(text, index)
        if match is None or match.end() == index:
            rest = text[index:].strip().split()[0] if text[index:].strip() else text[index:]
            raise ConversionError(
                f"architecture string: cannot read {rest!r} at character {index + 1}; "
                f"tokens are {', '.join(k.capitalize() for k in _KNOWN)}"
            )
        name, arg_text = match.group(1), match.group(2)
        kind = name.lower()
        token_text = text[match.start(1) : match.end()].strip()
        if kind not in _KNOWN:
            raise ConversionError(
                f"architecture token {len(tokens) + 1} {token_text!r}: unknown layer "
                f"{name!r}; use one of Input, Conv, FC, Leaky, BN, GAP, MaxPool, Flatten, Pad, "
                "Readout"
            )
        args = [a.strip() for a in arg_text[1:-1].split(",")] if arg_text else []
        tokens.append(Token(kind, [a for a in args if a], token_text, len(tokens) + 1))
        index = match.end()
        while index < len(text) and text[index] in " \t\n,":
            index += 1
    if not tokens:
        raise ConversionError("architecture string is empty; e.g. 'Conv(32,3,s2) Leaky FC(10)'")
    return tokens


def _int(token: Token, value: str, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConversionError(
            f"{token.where()}: {what} must be an integer, got {value!r}"
        ) from None
    if number < 0:
        raise ConversionError(f"{token.where()}: {what} must not be negative, got {number}")
    return number


@dataclass
class _Groups:
    """Tensor groups of a state_dict by prefix, split into the queues tokens pull from."""

    weighted: list[tuple[str, dict[str, np.ndarray]]]
    norms: list[tuple[str, dict[str, np.ndarray]]]
    spikes: list[tuple[str, dict[str, np.ndarray]]]


def _group(tensors: OrderedDict[str, np.ndarray]) -> _Groups:
    groups: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
    for key, value in tensors.items():
        prefix, _, param = key.rpartition(".")
        groups.setdefault(prefix, {})[param] = np.asarray(value)
    result = _Groups([], [], [])
    for prefix, params in groups.items():
        if "running_mean" in params:
            result.norms.append((prefix, params))
        elif "weight" in params:
            result.weighted.append((prefix, params))
        elif "threshold" in params or "beta" in params:
            result.spikes.append((prefix, params))
    return result


def _kwargs(token: Token) -> dict[str, float]:
    values: dict[str, float] = {}
    for arg in token.args:
        key, sep, value = arg.partition("=")
        if not sep or key.strip() not in ("threshold", "beta"):
            raise ConversionError(
                f"{token.where()}: Leaky takes threshold=... and beta=..., got {arg!r}"
            )
        try:
            values[key.strip()] = float(value)
        except ValueError:
            raise ConversionError(f"{token.where()}: {key.strip()} must be a number") from None
    return values


def _f32(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def graph_from_arch(
    arch: str,
    tensors: OrderedDict[str, np.ndarray],
    input_shape: tuple[int, int, int] | None = None,
) -> Graph:
    """Bind the tensors of a state_dict to an architecture string.

    ``input_shape`` is (height, width, channels), used when the string has no
    ``Input(...)`` token.
    """
    tokens = parse_arch(arch)
    if tokens[0].kind == "input":
        first = tokens.pop(0)
        if len(first.args) != 3:
            raise ConversionError(f"{first.where()}: Input takes (height,width,channels)")
        h, w, c = (_int(first, a, "input size") for a in first.args)
        input_shape = (h, w, c)
    if input_shape is None:
        raise ConversionError(
            "the input shape is unknown: start the architecture with Input(H,W,C) "
            "or pass --input-shape H,W,C (or calibration frames)"
        )
    groups = _group(tensors)
    use_buffers = bool(groups.spikes)
    h, w, c = input_shape
    shape: tuple[int, ...] = (c, h, w)
    nodes: list[Node] = []
    output = "potential"

    def take(queue: list[tuple[str, dict[str, np.ndarray]]], token: Token, what: str):
        if not queue:
            raise ConversionError(f"{token.where()}: the weights hold no more {what} tensors")
        return queue.pop(0)

    for token in tokens:
        if token.kind == "input":
            raise ConversionError(f"{token.where()}: Input may only be the first token")
        if token.kind == "conv":
            if len(token.args) < 2:
                raise ConversionError(f"{token.where()}: Conv takes (filters,kernel[,sN][,pN])")
            filters = _int(token, token.args[0], "filters")
            kernel = _int(token, token.args[1], "kernel")
            stride, pad = 1, kernel // 2
            for extra in token.args[2:]:
                low = extra.lower()
                if low.startswith("s"):
                    stride = _int(token, low[1:], "stride")
                elif low.startswith("p"):
                    pad = _int(token, low[1:], "padding")
                elif low == "same":
                    pad = kernel // 2
                elif low == "valid":
                    pad = 0
                else:
                    raise ConversionError(
                        f"{token.where()}: unknown Conv option {extra!r}; use sN, pN, same, valid"
                    )
            if len(shape) != 3:
                raise ConversionError(f"{token.where()}: Conv needs a spatial input, not flat")
            name, params = take(groups.weighted, token, "Conv/FC")
            weight = params["weight"]
            expected = (filters, shape[0], kernel, kernel)
            if weight.shape != expected:
                raise ConversionError(
                    f"{token.where()}: tensor {name}.weight has shape {tuple(weight.shape)}, "
                    f"expected {expected}"
                )
            bias = params.get("bias")
            nodes.append(
                Conv2d(
                    name,
                    _f32(weight),
                    None if bias is None else _f32(bias),
                    (stride, stride),
                    (pad, pad),
                )
            )
            if stride == 0:
                raise ConversionError(f"{token.where()}: stride must be at least 1")
            out_h = (shape[1] + 2 * pad - kernel) // stride + 1
            out_w = (shape[2] + 2 * pad - kernel) // stride + 1
            if out_h < 1 or out_w < 1:
                raise ConversionError(f"{token.where()}: kernel larger than its {shape} input")
            shape = (filters, out_h, out_w)
        elif token.kind == "fc":
            if len(token.args) != 1:
                raise ConversionError(f"{token.where()}: FC takes (units)")
            units = _int(token, token.args[0], "units")
            if len(shape) == 3:
                nodes.append(Flatten(f"flatten{len(nodes)}"))
                shape = (int(np.prod(shape)),)
            name, params = take(groups.weighted, token, "Conv/FC")
            weight = params["weight"]
            if weight.shape != (units, shape[0]):
                raise ConversionError(
                    f"{token.where()}: tensor {name}.weight has shape {tuple(weight.shape)}, "
                    f"expected {(units, shape[0])}"
                )
            bias = params.get("bias")
            nodes.append(Linear(name, _f32(weight), None if bias is None else _f32(bias)))
            shape = (units,)
        elif token.kind == "leaky":
            values = _kwargs(token)
            if use_buffers:
                name, params = take(groups.spikes, token, "Leaky")
                threshold = params.get("threshold", np.float32(values.get("threshold", 1.0)))
                beta = params.get("beta", np.float32(values.get("beta", 0.0)))
                graded = params.get("graded_spikes_factor", np.ones((), np.float32))
                reset = int(np.asarray(params.get("reset_mechanism_val", 0)).reshape(-1)[0])
            else:
                name = f"leaky{len(nodes)}"
                threshold = np.float32(values.get("threshold", 1.0))
                beta = np.float32(values.get("beta", 0.0))
                graded, reset = np.ones((), np.float32), 0
            nodes.append(
                Leaky(
                    name,
                    _f32(threshold),
                    _f32(beta),
                    _RESETS.get(reset, "subtract"),
                    _f32(graded),
                )
            )
        elif token.kind == "bn":
            name, params = take(groups.norms, token, "BatchNorm")
            nodes.append(
                BatchNorm(
                    name,
                    _f32(params.get("weight", np.ones(shape[0]))),
                    _f32(params.get("bias", np.zeros(shape[0]))),
                    _f32(params["running_mean"]),
                    _f32(params["running_var"]),
                )
            )
        elif token.kind == "gap":
            nodes.append(AvgPool(f"gap{len(nodes)}"))
            shape = (shape[0], 1, 1) if len(shape) == 3 else shape
        elif token.kind == "maxpool":
            if not token.args or len(token.args) > 2:
                raise ConversionError(f"{token.where()}: MaxPool takes (kernel[,sN])")
            k = _int(token, token.args[0], "kernel")
            s = (
                _int(token, token.args[1].lower().lstrip("s"), "stride")
                if len(token.args) > 1
                else k
            )
            nodes.append(MaxPool(f"maxpool{len(nodes)}", (k, k), (s, s)))
            if len(shape) == 3:
                shape = (shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)
        elif token.kind == "pad":
            if len(token.args) != 4 or len(shape) != 3:
                raise ConversionError(f"{token.where()}: Pad takes (left,right,top,bottom)")
            left, right, top, bottom = (_int(token, a, "padding") for a in token.args)
            nodes.append(Pad(f"pad{len(nodes)}", (left, right, top, bottom)))
            shape = (shape[0], shape[1] + top + bottom, shape[2] + left + right)
        elif token.kind == "readout":
            if token is not tokens[-1] or len(token.args) != 1:
                raise ConversionError(
                    f"{token.where()}: Readout(potential) or Readout(spikes) ends the string"
                )
            choice = _READOUTS.get(token.args[0].lower())
            if choice is None:
                raise ConversionError(
                    f"{token.where()}: read out 'potential' (membrane) or 'spikes', "
                    f"not {token.args[0]!r}"
                )
            output = choice
        elif token.kind == "flatten":
            nodes.append(Flatten(f"flatten{len(nodes)}"))
            shape = (int(np.prod(shape)),)
    leftovers = [name for name, _ in groups.weighted + groups.norms]
    if use_buffers:
        leftovers += [name for name, _ in groups.spikes]
    if leftovers:
        raise ConversionError(
            f"the weights hold layers the architecture string does not use: {', '.join(leftovers)}"
        )
    return Graph(
        input_shape=(c, h, w), nodes=nodes, output="spikes" if output == "spikes" else "potential"
    )


# snntorch's reset_mechanism_val: 0 subtract, 1 zero, 2 none
_RESETS = {0: "subtract", 1: "zero", 2: "none"}
