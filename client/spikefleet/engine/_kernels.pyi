from typing import NewType

from numpy import ndarray as Buffer

Kernel = NewType("Kernel", object)

def compile_conv(
    weights: Buffer,
    boundaries: Buffer | None,
    pixel_of: Buffer,
    channel_of: Buffer,
    pair_start: Buffer,
    pair_pixel: Buffer,
    pair_tap: Buffer,
    read_start: Buffer,
    read_out: Buffer,
    read_tap: Buffer,
    positions: int,
    filters: int,
    padded: int,
    binary: bool,
    saturate: bool,
    narrow: bool,
    /,
) -> Kernel: ...
def conv(kernel: Kernel, x: Buffer, out: Buffer, n: int, activate: bool, /) -> None: ...
def pooled(
    x: Buffer,
    classes: Buffer,
    weights: Buffer,
    out: Buffer,
    boundaries: Buffer | None,
    n: int,
    area: int,
    channels: int,
    blocks: int,
    filters: int,
    /,
) -> None: ...
def peak(x: Buffer, /) -> int: ...
