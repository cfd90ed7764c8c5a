"""Read a NIR graph (``nir`` 1.0.8) into the converter's graph IR.

NIR neurons are continuous-time; SNNTorch's exporter writes a Leaky(beta) as
LIF with tau = dt/(1-beta), r = tau/dt, v_leak = 0 (dt = 1e-4 by default). One
Euler step of dt gives v' = (1 - dt/tau) v + (dt/tau)(v_leak + r I), so the
converter reads beta = 1 - dt/tau and the spike condition
(dt/tau)(v_leak + r I) > v_threshold as I > threshold_eff with
threshold_eff = (v_threshold/(dt/tau) - v_leak)/r. ``Threshold`` is a
stateless neuron (beta = 0); ``IF`` never leaks (beta = 1, refused unless
allowed). The graph must be a chain from Input to Output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spikefleet.convert.graph import (
    AvgPool,
    Conv2d,
    Flatten,
    Graph,
    Leaky,
    Linear,
    Node,
    Unsupported,
)
from spikefleet.errors import ConversionError


def _per_channel(values: Any) -> np.ndarray:
    """A scalar or per-channel array from NIR's per-neuron parameters, if it is one."""
    array = np.asarray(values, dtype=np.float64)
    if array.size and np.all(array == array.reshape(-1)[0]):
        return np.asarray(array.reshape(-1)[0], dtype=np.float32)
    if array.ndim == 3 and np.all(array == array[:, :1, :1]):
        return array[:, 0, 0].astype(np.float32)
    return array.astype(np.float32)


def _pair(value: Any) -> tuple[int, int]:
    array = np.asarray(value).reshape(-1)
    return (int(array[0]), int(array[-1]))


def _reachable(successors: dict[str, list[str]], start: str) -> set[str]:
    found: set[str] = set()
    stack = [start]
    while stack:
        for target in successors.get(stack.pop(), []):
            if target not in found:
                found.add(target)
                stack.append(target)
    return found


def _chain(graph: Any) -> tuple[str, list[str]] | Unsupported:
    """The input node and the node names from it to the output, or why not a chain."""
    successors: dict[str, list[str]] = {}
    predecessors: dict[str, list[str]] = {}
    for source, target in graph.edges:
        successors.setdefault(source, []).append(target)
        predecessors.setdefault(target, []).append(source)
    inputs = [name for name, node in graph.nodes.items() if type(node).__name__ == "Input"]
    if len(inputs) != 1:
        return Unsupported("graph", "branch", f"{len(inputs)} Input nodes")
    order: list[str] = []
    current = inputs[0]
    seen = {current}
    while True:
        nxt = successors.get(current, [])
        if not nxt:
            break
        if len(nxt) > 1:
            return Unsupported(current, "branch", f"{current!r} feeds {', '.join(sorted(nxt))}")
        current = nxt[0]
        if current in seen:
            return Unsupported(current, "recurrent", f"an edge loops back to {current!r}")
        if len(predecessors.get(current, [])) > 1:
            sources = ", ".join(sorted(predecessors[current]))
            downstream = _reachable(successors, current)
            if any(source in downstream for source in predecessors[current]):
                return Unsupported(current, "recurrent", f"{current!r} is fed back from {sources}")
            return Unsupported(current, "branch", f"{current!r} sums inputs from {sources}")
        seen.add(current)
        order.append(current)
    return inputs[0], order


def graph_from_nir(
    path: str | Path,
    *,
    input_shape: tuple[int, int, int] | None = None,
    dt: float = 1e-4,
) -> Graph:
    """Read ``path`` with ``nir.read``; ``dt`` is the time step LIF neurons are read at."""
    import nir

    try:
        graph = nir.read(str(path))
    except Exception as exc:  # h5py and nir raise many kinds on a bad file
        raise ConversionError(f"{path}: not a readable NIR graph ({exc})") from exc
    chain = _chain(graph)
    nodes: list[Node] = []
    if isinstance(chain, Unsupported):
        return Graph(input_shape or (1, 1, 1), [chain])
    input_name, order = chain
    declared = np.asarray(graph.nodes[input_name].input_type["input"]).reshape(-1)
    if declared.size == 3:
        shape = (int(declared[0]), int(declared[1]), int(declared[2]))
    elif declared.size == 1:
        shape = (int(declared[0]), 1, 1)
    elif input_shape is not None:
        shape = (input_shape[2], input_shape[0], input_shape[1])
    else:
        raise ConversionError(
            f"{path}: input shape {declared.tolist()} is neither (C,H,W) nor (F,)"
        )
    for name in order:
        node = graph.nodes[name]
        kind = type(node).__name__
        if kind == "Output":
            continue
        if kind == "Conv2d":
            padding = node.padding
            weight = np.asarray(node.weight, dtype=np.float32)
            if isinstance(padding, str):
                padding = (
                    (0, 0) if padding == "valid" else (weight.shape[2] // 2, weight.shape[3] // 2)
                )
            nodes.append(
                Conv2d(
                    name,
                    weight,
                    np.asarray(node.bias, dtype=np.float32).reshape(-1),
                    _pair(node.stride),
                    _pair(padding),
                    _pair(node.dilation),
                    int(node.groups),
                )
            )
        elif kind in ("Affine", "Linear"):
            bias = getattr(node, "bias", None)
            nodes.append(
                Linear(
                    name,
                    np.asarray(node.weight, dtype=np.float32),
                    None if bias is None else np.asarray(bias, dtype=np.float32),
                )
            )
        elif kind == "LIF":
            gain = dt / np.asarray(node.tau, dtype=np.float64)
            r = np.asarray(node.r, dtype=np.float64)
            if np.any(gain * r <= 0):
                nodes.append(Unsupported(name, "LIF", "non-positive r or tau"))
                continue
            threshold = (np.asarray(node.v_threshold) / gain - np.asarray(node.v_leak)) / r
            nodes.append(Leaky(name, _per_channel(threshold), _per_channel(1.0 - gain), "zero"))
        elif kind == "IF":
            threshold = np.asarray(node.v_threshold) / np.asarray(node.r)
            nodes.append(Leaky(name, _per_channel(threshold), np.ones((), np.float32), "zero"))
        elif kind == "Threshold":
            nodes.append(
                Leaky(name, _per_channel(node.threshold), np.zeros((), np.float32), "none")
            )
        elif kind == "Flatten":
            nodes.append(Flatten(name))
        elif kind == "AvgPool2d" and not np.any(np.asarray(node.padding)):
            nodes.append(AvgPool(name, _pair(node.kernel_size), _pair(node.stride)))
        else:
            nodes.append(Unsupported(name, kind))
    return Graph(input_shape=shape, nodes=nodes, output="potential")
