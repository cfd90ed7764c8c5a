from numpy import ndarray as Buffer

def check_conv(
    weights: Buffer,
    pixel_of: Buffer,
    channel_of: Buffer,
    starts: Buffer,
    outs: Buffer,
    taps: Buffer,
    positions: int,
    filters: int,
    /,
) -> None: ...
def conv(
    x: Buffer,
    weights: Buffer,
    out: Buffer,
    boundaries: Buffer | None,
    n: int,
    pixel_of: Buffer,
    channel_of: Buffer,
    starts: Buffer,
    outs: Buffer,
    taps: Buffer,
    positions: int,
    filters: int,
    /,
) -> None: ...
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
def dense(
    x: Buffer,
    weights: Buffer,
    out: Buffer,
    boundaries: Buffer | None,
    n: int,
    inputs: int,
    filters: int,
    saturate: bool,
    /,
) -> None: ...
def peak(x: Buffer, /) -> int: ...
