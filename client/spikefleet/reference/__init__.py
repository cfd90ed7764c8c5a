"""The reference SNNTorch network for N-DIGITS, its training and shipped weights.

Importing this package does not import torch; touching ``ReferenceNet``,
``frames_to_input`` or ``load_reference_model`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spikefleet.reference.model import ReferenceNet, frames_to_input
    from spikefleet.reference.weights import SHIPPED_WEIGHTS, load_reference_model

_LAZY = {
    "ReferenceNet": "spikefleet.reference.model",
    "frames_to_input": "spikefleet.reference.model",
    "load_reference_model": "spikefleet.reference.weights",
    "SHIPPED_WEIGHTS": "spikefleet.reference.weights",
}

__all__ = ["SHIPPED_WEIGHTS", "ReferenceNet", "frames_to_input", "load_reference_model"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
