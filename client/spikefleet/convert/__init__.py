"""SNNTorch -> Akida 1.0 conversion: graph IR, loaders, compatibility, int4 quantization.

Pipeline (one module each): ``extraction`` (live nn.Module -> bundle) and
``loaders``/``arch``/``nir_import`` (files -> :class:`Graph`); ``compat``
(refusals and folding -> float stages); ``floatsim`` (the float model in
numpy); ``quantize`` (stages -> Akida layers with integer thresholds);
``fidelity`` (float vs the program on the engine); ``api`` (:func:`convert`).

Importing this package never imports torch; only :func:`extract` and reading
``.pt`` files do, when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spikefleet.convert.api import (
    CONVERTER_VERSION,
    ConversionResult,
    ConvertOptions,
    Progress,
    convert,
)
from spikefleet.convert.fidelity import FidelityReport, LayerFidelity
from spikefleet.convert.graph import Graph, load_bundle, save_bundle

if TYPE_CHECKING:
    from spikefleet.convert.extraction import extract


def __getattr__(name: str) -> Any:
    if name == "extract":
        from spikefleet.convert.extraction import extract

        return extract
    raise AttributeError(f"module 'spikefleet.convert' has no attribute {name!r}")


__all__ = [
    "CONVERTER_VERSION",
    "ConversionResult",
    "ConvertOptions",
    "FidelityReport",
    "Graph",
    "LayerFidelity",
    "Progress",
    "convert",
    "extract",
    "load_bundle",
    "save_bundle",
]
