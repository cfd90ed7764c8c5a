"""Quantization-aware fine-tuning for SNNTorch models (``spikefleet.qat``).

``prepare(model)`` fake-quantizes every Conv2d/Linear weight to int4 per output
channel exactly as the converter will (weights s * q, q an integer in [-7, 7]:
torch's own ``fake_quantize_per_channel_affine`` with its straight-through
gradient, or learned steps s, LSQ); train as usual; ``export(model, sample,
path)`` bakes the integer weights and places each firing threshold half a step
from the integers, so the converted program computes the fine-tuned network
decision for decision (the fidelity report's ``certificate``). ``fine_tune`` is
a loop for per-frame classifiers (distillation from the float model, cosine
decay, the best epoch on held-out frames kept); ``python -m spikefleet.qat``
fine-tunes the reference network.

Importing this package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spikefleet.qat.core import EpochStats, QATConfig, export, fine_tune, prepare

__all__ = ["EpochStats", "QATConfig", "export", "fine_tune", "prepare"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from spikefleet.qat import core

    return getattr(core, name)
