"""BrainChip's own mapping of a program onto a (virtual) Akida device."""

from __future__ import annotations

from typing import Any

from spikefleet.brainchip._akida import require_akida
from spikefleet.brainchip.convert import to_akida
from spikefleet.errors import HardwareMappingError
from spikefleet.program.model import HardwareParts, Program

DEVICES = ("AKD1000",)


def map_hardware(program: Program, device: str = "AKD1000") -> HardwareParts:
    """Map ``program`` entirely onto ``device`` with akida's mapper and return the
    inputs of ``HardwareDevice.program_external()`` and the number of NPs used.

    Raises HardwareMappingError with akida's reason when the program does not fit
    or uses something the device cannot run.
    """
    akida = require_akida("mapping a program onto Akida hardware")
    if device not in DEVICES:
        raise HardwareMappingError(
            f"unknown device {device!r}: spikefleet maps onto {', '.join(DEVICES)}"
        )
    model = to_akida(program)
    try:
        model.map(getattr(akida, device)(), hw_only=True)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())
        raise HardwareMappingError(
            f"program {program.name!r} does not map onto {device}: {reason}"
        ) from None
    sequences = list(model.sequences)
    if len(sequences) != 1:
        raise HardwareMappingError(
            f"program {program.name!r} needs {len(sequences)} hardware sequences on {device}; "
            "spikefleet deploys programs that run as one sequence"
        )
    parts = sequences[0].program_parts
    return HardwareParts(
        device=device,
        program_info=bytes(parts.program_info),
        program_data=bytes(parts.program_data),
        np_count=count_nps(sequences[0]),
    )


def count_nps(sequence: Any) -> int:
    """Neural processors a mapped sequence occupies, over all its passes."""
    return sum(
        len(layer.mapping.nps)
        for hw_pass in sequence.passes
        for layer in hw_pass.layers
        if layer.mapping is not None
    )
