"""Weights packed at their bit width, and the values akida accepts at each width.

Measured with akida 2.19.3: 1-bit weights are {0, 1}, 2-bit {-1, 0, 1},
4-bit [-7, 7] (akida rejects -8). Elements are packed in C order, each byte
filled from its least significant bit; 2- and 4-bit values are two's complement.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from spikefleet.errors import ProgramFormatError

WEIGHT_BITS = (1, 2, 4)


def weight_range(bits: int) -> tuple[int, int]:
    """The inclusive range of weight values akida accepts at ``bits`` bits."""
    if bits == 1:
        return 0, 1
    if bits in WEIGHT_BITS:
        top = (1 << (bits - 1)) - 1
        return -top, top
    raise ProgramFormatError(f"weights_bits must be one of {WEIGHT_BITS}, got {bits}")


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack(weights: npt.NDArray[np.int8], bits: int) -> bytes:
    """Pack int8 ``weights`` (already within :func:`weight_range`) into bytes."""
    weight_range(bits)
    per_byte = 8 // bits
    flat = (weights.reshape(-1).astype(np.uint8)) & np.uint8((1 << bits) - 1)
    padded = np.zeros(packed_size(flat.size, bits) * per_byte, dtype=np.uint8)
    padded[: flat.size] = flat
    groups = padded.reshape(-1, per_byte)
    out = np.zeros(groups.shape[0], dtype=np.uint8)
    for i in range(per_byte):
        out |= groups[:, i] << np.uint8(i * bits)
    return out.tobytes()


def unpack(data: bytes, bits: int, shape: tuple[int, ...], what: str) -> npt.NDArray[np.int8]:
    """Unpack ``data`` into int8 weights of ``shape``; out-of-range values are an error."""
    low, high = weight_range(bits)
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if len(data) != packed_size(count, bits):
        raise ProgramFormatError(
            f"{what}: {len(data)} bytes of {bits}-bit weights, but shape {shape} needs "
            f"{packed_size(count, bits)}"
        )
    per_byte = 8 // bits
    raw = np.frombuffer(data, dtype=np.uint8)
    fields = np.empty((raw.size, per_byte), dtype=np.uint8)
    mask = np.uint8((1 << bits) - 1)
    for i in range(per_byte):
        fields[:, i] = (raw >> np.uint8(i * bits)) & mask
    flat = fields.reshape(-1)
    if np.any(flat[count:]):
        raise ProgramFormatError(f"{what}: padding bits after the last weight are not zero")
    values = flat[:count].astype(np.int8)
    if bits > 1:
        values[values >= (1 << (bits - 1))] -= np.int8(1 << bits)
    bad = (values < low) | (values > high)
    if np.any(bad):
        raise ProgramFormatError(
            f"{what}: weight value {int(values[bad][0])} is outside [{low}, {high}], "
            f"the range akida accepts for {bits}-bit weights"
        )
    return values.reshape(shape)
