"""``spikefleet.extract``: record a live SNNTorch model's layer chain, in the user's environment.

One forward pass on a sample input with hooks on every layer gives the call
order, the parameters and the tensors that flow between layers. Where a
layer's input is not the previous layer's output, the pass finds out what
happened in between by comparing values: a flatten and a global average are
allowed; anything else (a residual add, a concatenation) is recorded as an
unsupported operation for the compatibility check to refuse by name. The
bundle written is safetensors + JSON: no pickles, nobody runs anyone's code.
"""

from __future__ import annotations

import os
from typing import Any

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
    OutputKind,
    Pad,
    Unsupported,
    save_bundle,
)
from spikefleet.errors import ConversionError
from spikefleet.events.spec import InputSpec

_ATOMIC_TORCH = ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "MultiheadAttention")
_PASS_THROUGH = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "Identity")
_RESETS = {0: "subtract", 1: "zero", 2: "none"}


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _node(name: str, module: Any, output: Any) -> Node | None:
    """The IR node for one called module (None for pass-through layers)."""
    import snntorch
    from torch import nn

    kind = type(module).__name__
    if kind in _PASS_THROUGH:
        return None
    if isinstance(module, nn.Conv2d):
        padding = module.padding
        if isinstance(padding, str):
            padding = (0, 0) if padding == "valid" else tuple(k // 2 for k in module.kernel_size)
        if module.padding_mode != "zeros":
            return Unsupported(name, kind, f"padding_mode={module.padding_mode!r}")
        return Conv2d(
            name,
            _numpy(module.weight),
            None if module.bias is None else _numpy(module.bias),
            _pair(module.stride),
            _pair(padding),
            _pair(module.dilation),
            int(module.groups),
        )
    if isinstance(module, nn.Linear):
        return Linear(
            name, _numpy(module.weight), None if module.bias is None else _numpy(module.bias)
        )
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        if module.running_mean is None or module.running_var is None:
            return Unsupported(name, kind, "no running statistics (track_running_stats=False)")
        channels = module.num_features
        return BatchNorm(
            name,
            _numpy(module.weight) if module.weight is not None else np.ones(channels, np.float32),
            _numpy(module.bias) if module.bias is not None else np.zeros(channels, np.float32),
            _numpy(module.running_mean),
            _numpy(module.running_var),
            float(module.eps),
        )
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        if size in (1, (1, 1)):
            return AvgPool(name)
        return Unsupported(name, kind, f"output_size={size}; only 1 (global) runs on Akida")
    if isinstance(module, nn.AvgPool2d):
        kernel = _pair(module.kernel_size)
        return AvgPool(name, kernel, _pair(module.stride or kernel))
    if isinstance(module, nn.MaxPool2d):
        if _pair(module.dilation) != (1, 1) or module.ceil_mode:
            return Unsupported(name, kind, "dilation or ceil_mode")
        kernel = _pair(module.kernel_size)
        return MaxPool(name, kernel, _pair(module.stride or kernel), _pair(module.padding))
    if isinstance(module, nn.Flatten):
        return Flatten(name)
    if isinstance(module, nn.ZeroPad2d | nn.ConstantPad2d):
        if float(getattr(module, "value", 0.0)) != 0.0:
            return Unsupported(name, kind, f"pads with {module.value}, not zeros")
        left, right, top, bottom = (int(v) for v in module.padding)
        return Pad(name, (left, right, top, bottom))
    if kind == "Leaky" and isinstance(module, snntorch.SpikingNeuron):
        return Leaky(
            name,
            _numpy(module.threshold),
            _numpy(module.beta),
            _RESETS.get(int(module.reset_mechanism_val), "subtract"),
            _numpy(module.graded_spikes_factor),
            bool(module.inhibition),
        )
    return Unsupported(name, kind)


def _atomic(module: Any) -> bool:
    import snntorch

    return (
        isinstance(module, snntorch.SpikingNeuron)
        or type(module).__name__ in _ATOMIC_TORCH
        or not any(True for _ in module.children())
    )


def _join(previous: Any, received: Any) -> Node | bool | None:
    """How ``received`` (a layer's input) came from ``previous`` (the last output).

    True: unchanged; a Flatten/AvgPool/Pad node: that operation; None: unexplained.
    """
    import torch

    if received is previous or (
        received.shape == previous.shape and torch.equal(received, previous)
    ):
        return True
    batch = previous.shape[0]
    if (
        received.shape[0] == batch
        and received.numel() == previous.numel()
        and torch.equal(received.reshape(batch, -1), previous.reshape(batch, -1))
    ):
        return Flatten("flatten")
    if (
        previous.dim() == 4
        and received.dim() == 4
        and received.shape[:2] == previous.shape[:2]
        and received.shape[2] >= previous.shape[2]
        and received.shape[3] >= previous.shape[3]
    ):
        return _zero_padding(previous, received)
    if (
        previous.dim() == 4
        and received.shape[0] == batch
        and received.numel() == batch * previous.shape[1]
    ):
        pooled = previous.mean(dim=(2, 3))
        if torch.allclose(received.reshape(batch, -1), pooled, rtol=1e-5, atol=1e-6):
            return AvgPool("global_average")
    return None


def _zero_padding(previous: Any, received: Any) -> Pad | None:
    """The (left, right, top, bottom) zero padding that turns previous into received."""
    import torch

    height, width = previous.shape[2], previous.shape[3]
    extra_h, extra_w = received.shape[2] - height, received.shape[3] - width
    found: list[Pad] = []
    for top in range(extra_h + 1):
        for left in range(extra_w + 1):
            inner = received[:, :, top : top + height, left : left + width]
            border = received.clone()
            border[:, :, top : top + height, left : left + width] = 0
            if torch.equal(inner, previous) and not torch.any(border):
                found.append(Pad("pad", (left, extra_w - left, top, extra_h - top)))
    if len(found) > 1:
        raise ConversionError(
            "extract: with this sample input the zero padding before a convolution is "
            "ambiguous (the sample is empty or uniform); pass a real or random sample "
            "(e.g. torch.rand) or pad with an nn.ZeroPad2d module"
        )
    return found[0] if found else None


def extract(
    model: Any,
    sample_input: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    input_spec: InputSpec | None = None,
) -> Graph:
    """Record ``model``'s layer chain with one forward pass on ``sample_input``.

    ``sample_input`` is a batch as the model takes it, e.g. float (N, C, H, W)
    event counts. ``input_spec`` says how the model's input frames were made
    from events; it travels in the bundle into the converted program. Writes
    the bundle to ``path`` when given; returns the graph.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ConversionError(f"extract needs a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(sample_input, torch.Tensor) or sample_input.dim() not in (2, 4):
        raise ConversionError("extract needs a sample batch tensor shaped (N, C, H, W) or (N, F)")
    calls: list[tuple[str, Any, Any, Any]] = []
    called: set[str] = set()
    skip_under: list[str] = []
    handles = []

    def recorder(name: str):
        def hook(module: Any, inputs: Any, output: Any) -> None:
            if name in called:  # later time steps repeat the chain
                return
            called.add(name)
            calls.append((name, module, _first_tensor(inputs), output))

        return hook

    for name, module in model.named_modules():
        if not name or any(name.startswith(prefix + ".") for prefix in skip_under):
            continue
        if _atomic(module):
            skip_under.append(name)
            handles.append(module.register_forward_hook(recorder(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = model(sample_input)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    nodes: list[Node] = []
    current = sample_input
    previous_name = "input"
    last_spike: tuple[Any, Any] | None = None
    for name, module, received, output in calls:
        node = _node(name, module, output)
        if received is None:
            raise ConversionError(f"layer {name!r} was called without a tensor input")
        join = _join(current, received)
        if join is None:
            nodes.append(
                Unsupported(
                    f"{previous_name}->{name}",
                    "functional",
                    f"the input of {name!r} is not the output of {previous_name!r} "
                    "(a residual/skip path or another tensor operation)",
                )
            )
        elif not isinstance(join, bool):
            join.name = f"{join.name}_{name}"
            nodes.append(join)
        if node is None:
            current = _first_tensor(output)
            continue
        nodes.append(node)
        out = _first_tensor(output)
        if isinstance(node, Leaky):
            mem = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            last_spike = (out, mem)
        else:
            last_spike = None
        current = out
        previous_name = name
    output_kind = _output_kind(result, current, last_spike)
    dims = tuple(int(v) for v in sample_input.shape[1:])
    input_shape = (dims[0], dims[1], dims[2]) if len(dims) == 3 else (dims[0], 1, 1)
    graph = Graph(input_shape=input_shape, nodes=nodes, output=output_kind, input_spec=input_spec)
    if path is not None:
        save_bundle(graph, path)
    return graph


def _output_kind(result: Any, current: Any, last_spike: tuple[Any, Any] | None) -> OutputKind:
    import torch

    returned = _first_tensor(result)
    if last_spike is None or returned is None:
        return "potential"
    spikes, mem = last_spike
    if mem is not None and returned.shape == mem.shape and torch.equal(returned, mem):
        return "potential"
    if returned.shape == spikes.shape and torch.equal(returned, spikes):
        return "spikes"
    return "potential"
