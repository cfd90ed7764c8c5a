"""The shipped reference weights: safetensors in, safetensors out (never pickle)."""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import load_file, save_file

from spikefleet.errors import SpikefleetError
from spikefleet.reference.model import ReferenceNet

#: Trained by ``python -m spikefleet.reference.train --out`` (see benchmarks/RESULTS.md).
SHIPPED_WEIGHTS = Path(__file__).with_name("ndigits_reference.safetensors")


def save_weights(model: ReferenceNet, path: str | os.PathLike[str]) -> None:
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(path), metadata={"model": "spikefleet.reference.ReferenceNet"})


def load_reference_model(path: str | os.PathLike[str] | None = None) -> ReferenceNet:
    """The trained reference network (shipped weights unless ``path`` is given), in eval mode."""
    path = Path(path) if path is not None else SHIPPED_WEIGHTS
    if not path.is_file():
        raise SpikefleetError(
            f"no reference weights at {path}: train them with "
            "`python -m spikefleet.reference.train --out PATH`"
        )
    model = ReferenceNet()
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as exc:  # safetensors and torch raise assorted types on bad files
        raise SpikefleetError(f"{path} does not hold ReferenceNet weights ({exc})") from None
    return model.eval()
