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
    Reference,
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


_RECORD_SAMPLES = 32  # samples of the sample batch whose outputs go into the bundle


def _reset_state(model: Any) -> None:
    """Every neuron starts at rest, as ``snntorch.utils.reset(net)`` does per sample."""
    import snntorch

    for module in model.modules():
        if isinstance(module, snntorch.SpikingNeuron) and hasattr(module, "reset_mem"):
            module.reset_mem()


class _Recorder:
    """Forward hooks on the atomic modules: call order, inputs and outputs of every call."""

    def __init__(self, model: Any) -> None:
        self.order: list[tuple[str, Any]] = []
        self.calls: dict[str, list[tuple[Any, Any, Any]]] = {}
        self.handles: list[Any] = []
        skip_under: list[str] = []
        for name, module in model.named_modules():
            if not name or any(name.startswith(prefix + ".") for prefix in skip_under):
                continue
            if _atomic(module):
                skip_under.append(name)
                self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Any:
        import snntorch
        import torch

        def hook(module: Any, inputs: Any, output: Any) -> None:
            if name not in self.calls:
                self.order.append((name, module))
                self.calls[name] = []
            mem = None
            if isinstance(module, snntorch.SpikingNeuron):
                mem = getattr(module, "mem", None)
                if not isinstance(mem, torch.Tensor) and isinstance(output, tuple):
                    mem = output[1] if len(output) > 1 else None
            mem = mem.detach().clone() if isinstance(mem, torch.Tensor) else None
            self.calls[name].append((_first_tensor(inputs), output, mem))

        return hook

    def clear(self) -> None:
        self.order.clear()
        self.calls.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _run(model: Any, sample: Any, recorder: _Recorder, sequence: bool | None) -> tuple[Any, int]:
    """Run the model as its user does; (the first step's input, number of time steps).

    A ``[T, B, ...]`` sample goes to ``forward`` whole first (a time-loop forward
    indexes it itself); if that fails, or the first layer saw the whole sequence
    at once, the steps are fed one by one after a reset, as
    ``spk, mem = net(x[t])`` loops do.
    """
    steps = int(sample.shape[0]) if sequence else 1
    if sequence:
        _reset_state(model)
        try:
            model(sample)
            first = recorder.calls[recorder.order[0][0]][0][0] if recorder.order else None
            whole = first is not None and first.dim() == sample.dim()
        except (RuntimeError, ValueError, TypeError, IndexError):
            whole = True
        if not whole:
            return sample[0], steps
        recorder.clear()
        _reset_state(model)
        for step in range(steps):
            model(sample[step])
        return sample[0], steps
    _reset_state(model)
    model(sample)
    return sample, steps


def extract(
    model: Any,
    sample_input: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    input_spec: InputSpec | None = None,
    readout: OutputKind = "potential",
    sequence: bool | None = None,
) -> Graph:
    """Record ``model``'s layer chain and its own outputs on ``sample_input``.

    ``sample_input`` is a batch as the model takes it: float (N, C, H, W) or (N, F)
    event counts, or a sequence (T, N, C, H, W) / (T, N, F) for models run over
    time steps (``sequence`` forces either reading; by default 5 and 3 dimensions
    are sequences). The spikes and membranes of every neuron at every step go
    into the bundle, so the converter can prove it reads the model as torch runs
    it. ``readout`` is what the last layer's result is: its membrane potential
    (default; what classifiers trained on membranes or spike counts both rank
    by) or its spikes. ``input_spec`` says how the model's input frames were
    made from events; it travels in the bundle into the converted program.
    Writes the bundle to ``path`` when given.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ConversionError(f"extract needs a torch.nn.Module, got {type(model).__name__}")
    if readout not in ("potential", "spikes"):
        raise ConversionError(f"readout {readout!r}: choose 'potential' or 'spikes'")
    if not isinstance(sample_input, torch.Tensor) or sample_input.dim() not in (2, 3, 4, 5):
        raise ConversionError(
            "extract needs a sample batch tensor shaped (N, C, H, W) or (N, F), "
            "or a sequence (T, N, C, H, W) or (T, N, F)"
        )
    if sequence is None:
        sequence = sample_input.dim() in (3, 5)
    if sequence and sample_input.dim() not in (3, 5):
        raise ConversionError("a sequence sample is shaped (T, N, C, H, W) or (T, N, F)")
    sample_input = sample_input.detach().float()
    recorder = _Recorder(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            first_input, steps = _run(model, sample_input, recorder, sequence)
    finally:
        recorder.remove()
        _reset_state(model)
        model.train(was_training)
    if not recorder.order:
        raise ConversionError("extract: the forward pass called no layers")

    nodes: list[Node] = []
    current = first_input
    previous_name = "input"
    kept: list[str] = []  # nodes whose outputs the reference keeps
    for name, module in recorder.order:
        received, output, _ = recorder.calls[name][0]
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
        if isinstance(node, Leaky | MaxPool | AvgPool):
            kept.append(name)
        current = _first_tensor(output)
        previous_name = name
    if nodes and isinstance(nodes[-1], Conv2d | Linear) and previous_name not in kept:
        kept.append(previous_name)  # a model ending in a weighted layer: its output is the result
    dims = tuple(int(v) for v in first_input.shape[1:])
    input_shape = (dims[0], dims[1], dims[2]) if len(dims) == 3 else (int(np.prod(dims)), 1, 1)
    graph = Graph(input_shape=input_shape, nodes=nodes, output=readout, input_spec=input_spec)
    graph.reference = _reference(sample_input, sequence, steps, input_shape, recorder, kept)
    if path is not None:
        save_bundle(graph, path)
    return graph


def _reference(
    sample: Any,
    sequence: bool,
    steps: int,
    input_shape: tuple[int, int, int],
    recorder: _Recorder,
    kept: list[str],
) -> Reference | None:
    """The model's own outputs per step, or None when the calls do not form steps."""
    import torch

    counts = {len(recorder.calls[name]) for name, _ in recorder.order}
    if len(counts) != 1:
        return None  # some layer ran more often than others: not one chain per step
    calls = counts.pop()
    if sequence and calls != steps:
        return None
    keep = slice(0, _RECORD_SAMPLES)
    if sequence:
        inputs = sample[:, keep]
    else:
        inputs = sample[keep].unsqueeze(0).expand(calls, *sample[keep].shape)
    batch = inputs.shape[1]
    inputs = inputs.reshape(calls, batch, *input_shape)
    outputs: dict[str, np.ndarray] = {}
    membranes: dict[str, np.ndarray] = {}
    for name in kept:
        per_call = recorder.calls[name]
        outs = [_first_tensor(output) for _, output, _ in per_call]
        if any(out is None or out.shape[0] < batch for out in outs):
            return None
        outputs[name] = torch.stack([out[:batch] for out in outs]).numpy().astype(np.float32)
        mems = [mem for _, _, mem in per_call]
        if all(mem is not None and mem.shape == outs[0].shape for mem in mems):
            membranes[name] = torch.stack([m[:batch] for m in mems]).numpy().astype(np.float32)
    return Reference(_numpy(inputs), outputs, membranes)
