"""DVS events: tonic-compatible arrays, N-MNIST and AEDAT4 files, and input specs.

An :class:`InputSpec` says how events become a program's frames; the one
implementation (:mod:`spikefleet.events.binning`) serves training pipelines,
conversion, ``spikefleet run`` and the agent's live binning.

Nothing here imports torch or scikit-learn.
"""

from spikefleet.events.aedat4 import read_aedat4, write_aedat4
from spikefleet.events.frames import to_frames
from spikefleet.events.nmnist import decode_nmnist, encode_nmnist, read_nmnist, write_nmnist
from spikefleet.events.spec import (
    Binning,
    CropBox,
    Decision,
    InputSpec,
    InputSpecError,
    Polarity,
    WindowStart,
    default_input_spec,
    load_input_spec,
    parse_input_spec,
)
from spikefleet.events.types import EVENT_DTYPE, as_events, make_events

__all__ = [
    "EVENT_DTYPE",
    "Binning",
    "CropBox",
    "Decision",
    "InputSpec",
    "InputSpecError",
    "Polarity",
    "WindowStart",
    "as_events",
    "decode_nmnist",
    "default_input_spec",
    "encode_nmnist",
    "load_input_spec",
    "make_events",
    "parse_input_spec",
    "read_aedat4",
    "read_nmnist",
    "to_frames",
    "write_aedat4",
    "write_nmnist",
]
