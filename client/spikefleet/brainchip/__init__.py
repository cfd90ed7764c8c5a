"""The bridge to BrainChip's ``akida`` package (optional: imported only when used).

``to_akida``/``from_akida`` convert between Programs and ``akida.Model``;
``load_fbz``/``save_fbz`` read and write akida's model files; ``map_hardware``
maps a program onto a virtual AKD1000 and returns the hardware parts. Every
function raises AkidaUnavailableError when akida is not installed.
"""

from spikefleet.brainchip.convert import from_akida, to_akida
from spikefleet.brainchip.fbz import fbz_bytes, load_fbz, save_fbz
from spikefleet.brainchip.hardware import count_nps, map_hardware

__all__ = [
    "count_nps",
    "fbz_bytes",
    "from_akida",
    "load_fbz",
    "map_hardware",
    "save_fbz",
    "to_akida",
]
