from numpy import ndarray as Buffer

def scan(
    events: Buffer, width: int, height: int, row: Buffer, col: Buffer
) -> tuple[int, int, int, int]: ...
def count(
    events: Buffer,
    row: Buffer,
    col: Buffer,
    channel_step: int,
    origin: int,
    window: int,
    first: int,
    lo_t: int,
    hi_t: int,
    out: Buffer,
    size: int,
) -> tuple[int, int]: ...
