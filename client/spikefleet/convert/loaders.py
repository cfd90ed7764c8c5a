"""Turn a model on disk into a :class:`Graph`, whatever form it arrived in.

- a bundle written by :func:`spikefleet.extract` (``.safetensors`` with a graph);
- a state_dict as ``.pt`` (read with ``torch.load(weights_only=True)``, never a
  full unpickle) or plain ``.safetensors``, plus an architecture string;
- a directory in the seed document's numpy layout (``fc1_weight.npy``,
  ``fc1_bias.npy``, ``lif1_threshold.txt``, ...);
- a NIR graph (``.nir``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

from spikefleet.convert.arch import graph_from_arch
from spikefleet.convert.graph import Graph, is_bundle, load_bundle, read_safetensors
from spikefleet.errors import ConversionError

_NUMPY_PARAMS = ("weight", "bias", "running_mean", "running_var")
_TEXT_PARAMS = ("threshold", "beta", "graded_spikes_factor")


def model_name(path: str | os.PathLike[str]) -> str:
    """The program name a model file suggests: its name without the extension, nor the
    ``.bundle`` that marks extract's output (``digits.bundle.safetensors`` -> ``digits``)."""
    target = Path(path)
    stem = target.stem if target.suffix and not target.is_dir() else target.name
    return stem.removesuffix(".bundle") or stem


def source_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a model file, or of a directory's files (names and bytes, sorted)."""
    digest = hashlib.sha256()
    target = Path(path)
    if target.is_dir():
        for item in sorted(p for p in target.iterdir() if p.is_file()):
            digest.update(item.name.encode() + b"\0")
            digest.update(item.read_bytes())
    else:
        digest.update(target.read_bytes())
    return digest.hexdigest()


def load_graph(
    path: str | os.PathLike[str],
    arch: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    nir_dt: float = 1e-4,
) -> Graph:
    """Read any supported model form; ``input_shape`` is (height, width, channels)."""
    target = Path(path)
    if not target.exists():
        raise ConversionError(f"{target}: no such file or directory")
    if target.is_dir():
        return _numpy_dir(target, arch, input_shape)
    kind = sniff(target)
    if kind == "nir":
        from spikefleet.convert.nir_import import graph_from_nir

        return graph_from_nir(target, input_shape=input_shape, dt=nir_dt)
    if kind == "safetensors":
        tensors, metadata = read_safetensors(target)
        if is_bundle(metadata):
            if arch:
                raise ConversionError(
                    f"{target} is a spikefleet bundle and carries its own graph; drop --arch"
                )
            return load_bundle(target)
        return _with_arch(target, OrderedDict(tensors), arch, input_shape)
    if kind == "torch":
        return _with_arch(target, _torch_state_dict(target), arch, input_shape)
    raise ConversionError(
        f"{target}: not a model file spikefleet reads (by its content, whatever its name): "
        "give a bundle from spikefleet.extract or a state_dict (safetensors), a torch "
        "state_dict (torch.save), a NIR graph (nir.write) or a numpy directory"
    )


def sniff(path: Path) -> str:
    """The file's format from its first bytes: safetensors, torch, nir or unknown.

    safetensors starts with an 8-byte little-endian header length and a JSON
    object; torch.save writes a zip archive (or, before torch 1.6, a pickle);
    NIR graphs are HDF5.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "nir"
    if len(head) >= 9 and head[8:9] == b"{":
        length = int.from_bytes(head[:8], "little")
        if 0 < length <= path.stat().st_size - 8:
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    return "unknown"


def _with_arch(
    path: Path,
    tensors: OrderedDict[str, np.ndarray],
    arch: str | None,
    input_shape: tuple[int, int, int] | None,
) -> Graph:
    if not arch:
        raise ConversionError(
            f"{path} holds weights only; pass an architecture string such as "
            "--arch 'Conv(32,3,s2) Leaky Conv(64,3,s2) GAP Leaky FC(10) Leaky', "
            "or export a bundle with spikefleet.extract"
        )
    return graph_from_arch(arch, tensors, input_shape)


def _torch_state_dict(path: Path) -> OrderedDict[str, np.ndarray]:
    import pickle

    import torch

    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConversionError(
            f"{path}: refused to unpickle it (it holds more than tensors, e.g. a whole "
            "module); save model.state_dict() instead, or use spikefleet.extract"
        ) from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise ConversionError(f"{path}: not a readable torch file ({exc})") from exc
    if (
        isinstance(loaded, dict)
        and "state_dict" in loaded
        and isinstance(loaded["state_dict"], dict)
    ):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ConversionError(f"{path}: expected a state_dict (a dict of tensors)")
    return OrderedDict((k, v.detach().cpu().numpy()) for k, v in loaded.items())


def _natural(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _numpy_dir(root: Path, arch: str | None, input_shape: tuple[int, int, int] | None) -> Graph:
    """The seed document's layout: ``{module}_{param}.npy`` and ``{module}_{param}.txt``."""
    found: dict[str, dict[str, np.ndarray]] = {}
    for item in root.iterdir():
        for param in _NUMPY_PARAMS:
            if item.name.endswith(f"_{param}.npy"):
                module = item.name[: -len(f"_{param}.npy")]
                try:
                    found.setdefault(module, {})[param] = np.load(item, allow_pickle=False)
                except ValueError as exc:
                    raise ConversionError(f"{item}: not a plain numpy array ({exc})") from exc
        for param in _TEXT_PARAMS:
            if item.name.endswith(f"_{param}.txt"):
                module = item.name[: -len(f"_{param}.txt")]
                try:
                    number = float(item.read_text().strip())
                except ValueError:
                    raise ConversionError(f"{item}: expected one number") from None
                found.setdefault(module, {})[param] = np.array(number, dtype=np.float32)
    if not found:
        raise ConversionError(
            f"{root}: no model files; expected the numpy layout (fc1_weight.npy, "
            "fc1_bias.npy, lif1_threshold.txt, ...)"
        )

    # Files carry no order: convolutions precede fully connected layers in any
    # chain Akida runs, and within a kind the names' numbers give the order.
    def rank(module: str) -> tuple[int, list[object]]:
        weight = found[module].get("weight")
        return (0 if weight is not None and weight.ndim == 4 else 1, _natural(module))

    tensors: OrderedDict[str, np.ndarray] = OrderedDict()
    for module in sorted(found, key=rank):
        for param, value in found[module].items():
            tensors[f"{module}.{param}"] = np.asarray(value)
    if arch is None:
        arch = _fc_chain_arch(root, found)
    return graph_from_arch(arch, tensors, input_shape)


def _fc_chain_arch(root: Path, found: dict[str, dict[str, np.ndarray]]) -> str:
    """The seed's own case: Linear layers each followed by a Leaky."""
    weights = [m for m in found if "weight" in found[m]]
    spikes = [m for m in found if "threshold" in found[m]]
    if any(found[m]["weight"].ndim != 2 for m in weights) or len(weights) != len(spikes):
        raise ConversionError(
            f"{root}: only a chain of Linear+Leaky layers converts without --arch; "
            "give the architecture, e.g. --arch 'Conv(32,3) Leaky FC(10) Leaky'"
        )
    units = [found[m]["weight"].shape[0] for m in sorted(weights, key=_natural)]
    return " ".join(f"FC({n}) Leaky" for n in units)
