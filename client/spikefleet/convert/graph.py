"""The converter's graph IR: the layer chain of an SNNTorch network, in float.

Every input path (live-module extraction, state_dict + architecture string,
the seed document's numpy directory, NIR) produces a :class:`Graph`; the
compatibility check and the quantizer only ever see this. Weights keep torch's
layouts (Conv2d ``(out, in, kh, kw)``, Linear ``(out, in)``) so each loader is a
plain copy and the one place that knows Akida's layouts is the quantizer.

A Graph is saved as one ``.safetensors`` file whose metadata carries the JSON
node list (the "bundle"): no pickles, readable without torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from spikefleet.errors import ConversionError
from spikefleet.events.spec import InputSpec, InputSpecError

FloatArray: TypeAlias = npt.NDArray[np.float32]

BUNDLE_FORMAT = "spikefleet-bundle/1"


def _short(value: Any) -> str:
    """An array as its dtype and shape (a scalar as its value): reprs stay one line."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return f"{value.item():g}"
        return f"{value.dtype}[{','.join(map(str, value.shape))}]"
    return repr(value)


class _Brief:
    """A repr naming every field, with arrays shown by shape rather than dumped."""

    def __repr__(self) -> str:
        names = getattr(self, "__dataclass_fields__", {})
        parts = ", ".join(f"{name}={_short(getattr(self, name))}" for name in names)
        return f"{type(self).__name__}({parts})"


_GRAPH_KEY = "spikefleet.graph"
_FORMAT_KEY = "format"
_REF = "@reference/"  # tensor-name prefix of the recorded torch outputs


@dataclass(eq=False, repr=False)
class Conv2d(_Brief):
    name: str
    weight: FloatArray  # (out, in, kh, kw), torch layout
    bias: FloatArray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


@dataclass(eq=False, repr=False)
class Linear(_Brief):
    name: str
    weight: FloatArray  # (out, in), torch layout
    bias: FloatArray | None = None


@dataclass(eq=False, repr=False)
class BatchNorm(_Brief):
    name: str
    weight: FloatArray
    bias: FloatArray
    running_mean: FloatArray
    running_var: FloatArray
    eps: float = 1e-5


@dataclass(eq=False, repr=False)
class Leaky(_Brief):
    """An SNNTorch ``Leaky`` neuron layer (arrays are scalars or per-channel)."""

    name: str
    threshold: FloatArray
    beta: FloatArray
    reset_mechanism: str = "subtract"  # snntorch's names: subtract | zero | none
    graded_spikes_factor: FloatArray = field(default_factory=lambda: np.ones((), dtype=np.float32))
    inhibition: bool = False


@dataclass(eq=False, repr=False)
class AvgPool(_Brief):
    """Average pooling; ``kernel=None`` is global average pooling."""

    name: str
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None


@dataclass(eq=False, repr=False)
class MaxPool(_Brief):
    name: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)


@dataclass(eq=False, repr=False)
class Pad(_Brief):
    """Zero padding before a convolution, in ``nn.ZeroPad2d`` order (left, right, top, bottom)."""

    name: str
    pads: tuple[int, int, int, int]


@dataclass(eq=False, repr=False)
class Flatten(_Brief):
    name: str


@dataclass(eq=False, repr=False)
class Unsupported(_Brief):
    """Something an input path found that Akida cannot run; the check refuses it.

    ``kind`` is the module type (``"RLeaky"``, ``"LSTM"``, ...) or
    ``"functional"`` for an operation between modules (a residual add, ...).
    """

    name: str
    kind: str
    detail: str = ""


Node: TypeAlias = (
    Conv2d | Linear | BatchNorm | Leaky | AvgPool | MaxPool | Pad | Flatten | Unsupported
)

OutputKind: TypeAlias = Literal["potential", "spikes"]


@dataclass(eq=False, repr=False)
class Reference:
    """What the user's torch model itself computed on the sample, step by step.

    ``inputs`` (T, N, C, H, W) are what the model was fed (in its own units);
    ``outputs[node]`` (T, N, ...) what a Leaky (its spikes) or a pooling node
    returned at each step, in torch layout; ``membranes[leaky]`` the Leaky's
    membrane after each step. The converter replays ``inputs`` through its
    reading of the graph and must reproduce these.
    """

    inputs: FloatArray
    outputs: dict[str, FloatArray] = field(default_factory=dict)
    membranes: dict[str, FloatArray] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Reference(inputs={_short(self.inputs)}, outputs={list(self.outputs)})"


@dataclass(eq=False, repr=False)
class Graph:
    """A chain of nodes fed by input of ``input_shape`` (channels, height, width).

    ``output`` says what the model's result is: the last Leaky's membrane
    potential (read as class scores) or its spikes. ``input_scale`` is what the
    model was trained on per unit of input count (folded into the first layer).
    """

    input_shape: tuple[int, int, int]
    nodes: list[Node]
    output: OutputKind = "potential"
    input_scale: float = 1.0
    input_spec: InputSpec | None = None  # how the model's input frames were made
    reference: Reference | None = None  # what torch computed on the extract sample

    def __repr__(self) -> str:
        nodes = "".join(f"\n    {node!r}," for node in self.nodes)
        return (
            f"Graph(input_shape={self.input_shape}, output={self.output!r}, "
            f"input_scale={self.input_scale:g}, input_spec={self.input_spec!r}, nodes=[{nodes}\n])"
        )


_TENSOR_FIELDS: dict[type, tuple[str, ...]] = {
    Conv2d: ("weight", "bias"),
    Linear: ("weight", "bias"),
    BatchNorm: ("weight", "bias", "running_mean", "running_var"),
    Leaky: ("threshold", "beta", "graded_spikes_factor"),
}
_KINDS: dict[str, type] = {
    cls.__name__: cls
    for cls in (Conv2d, Linear, BatchNorm, Leaky, AvgPool, MaxPool, Pad, Flatten, Unsupported)
}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def graph_to_bundle(graph: Graph) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split a graph into named float32 tensors and a JSON-able description."""
    tensors: dict[str, np.ndarray] = {}
    nodes: list[dict[str, Any]] = []
    for node in graph.nodes:
        entry: dict[str, Any] = {"node": type(node).__name__}
        tensor_fields = _TENSOR_FIELDS.get(type(node), ())
        for key, value in vars(node).items():
            if key in tensor_fields:
                if value is not None:
                    tensors[f"{node.name}.{key}"] = np.ascontiguousarray(value, dtype=np.float32)
            else:
                entry[key] = _plain(value)
        nodes.append(entry)
    description: dict[str, Any] = {
        "input_shape": list(graph.input_shape),
        "output": graph.output,
        "input_scale": graph.input_scale,
        "nodes": nodes,
    }
    if graph.input_spec is not None:
        description["input_spec"] = graph.input_spec.to_dict()
    if graph.reference is not None:
        ref = graph.reference
        tensors[f"{_REF}input"] = np.ascontiguousarray(ref.inputs, dtype=np.float32)
        for name, value in ref.outputs.items():
            tensors[f"{_REF}out:{name}"] = np.ascontiguousarray(value, dtype=np.float32)
        for name, value in ref.membranes.items():
            tensors[f"{_REF}mem:{name}"] = np.ascontiguousarray(value, dtype=np.float32)
        description["reference"] = {"outputs": list(ref.outputs), "membranes": list(ref.membranes)}
    return tensors, description


def graph_from_bundle(tensors: dict[str, np.ndarray], description: dict[str, Any]) -> Graph:
    """Rebuild a graph from :func:`graph_to_bundle`'s output; ConversionError if inconsistent."""
    try:
        nodes: list[Node] = []
        for entry in description["nodes"]:
            fields = dict(entry)
            kind = fields.pop("node")
            cls = _KINDS.get(kind)
            if cls is None:
                raise ConversionError(f"bundle: unknown node kind {kind!r}")
            for key in _TENSOR_FIELDS.get(cls, ()):
                tensor = tensors.get(f"{fields['name']}.{key}")
                if tensor is not None:
                    fields[key] = np.asarray(tensor, dtype=np.float32)
            for key, value in list(fields.items()):
                if isinstance(value, list):
                    fields[key] = tuple(value)
            nodes.append(cls(**fields))
        c, h, w = (int(v) for v in description["input_shape"])
        spec = description.get("input_spec")
        reference = None
        recorded = description.get("reference")
        if recorded is not None:
            reference = Reference(
                np.asarray(tensors[f"{_REF}input"], dtype=np.float32),
                {n: np.asarray(tensors[f"{_REF}out:{n}"]) for n in recorded["outputs"]},
                {n: np.asarray(tensors[f"{_REF}mem:{n}"]) for n in recorded["membranes"]},
            )
        output = description.get("output", "potential")
        if output not in ("potential", "spikes"):
            raise ValueError(f"output {output!r}")
        return Graph(
            input_shape=(c, h, w),
            nodes=nodes,
            output=output,
            input_scale=float(description.get("input_scale", 1.0)),
            input_spec=None if spec is None else InputSpec.from_dict(spec),
            reference=reference,
        )
    except InputSpecError as exc:
        raise ConversionError(f"bundle: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionError(
            f"bundle: malformed graph description ({exc!r}); re-create it with spikefleet.extract"
        ) from exc


def save_bundle(graph: Graph, path: str | os.PathLike[str]) -> Path:
    """Write ``graph`` as one .safetensors file with the JSON graph in its metadata."""
    from safetensors.numpy import save_file

    tensors, description = graph_to_bundle(graph)
    target = Path(path)
    save_file(
        tensors,
        str(target),
        metadata={_FORMAT_KEY: BUNDLE_FORMAT, _GRAPH_KEY: json.dumps(description)},
    )
    return target


def read_safetensors(
    path: str | os.PathLike[str],
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors (as numpy) and the metadata of a .safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConversionError(f"{path}: not a readable .safetensors file ({exc})") from exc
    return tensors, metadata


def is_bundle(metadata: dict[str, str]) -> bool:
    return metadata.get(_FORMAT_KEY) == BUNDLE_FORMAT and _GRAPH_KEY in metadata


def load_bundle(path: str | os.PathLike[str]) -> Graph:
    tensors, metadata = read_safetensors(path)
    if not is_bundle(metadata):
        raise ConversionError(
            f"{path}: a .safetensors file without a spikefleet graph; "
            "pass --arch to read it as a state_dict"
        )
    try:
        description = json.loads(metadata[_GRAPH_KEY])
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{path}: the bundle's graph JSON is corrupt ({exc})") from exc
    return graph_from_bundle(tensors, description)
