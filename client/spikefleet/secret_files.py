"""Files that hold secrets (tokens, private keys): written 0600, flagged when others can read.

A token or key another local user can read is as good as published, so every
spikefleet program that writes one sets mode 0600 before any byte lands, and
every reader logs a warning (naming the ``chmod`` that fixes it) when the
file's group or other permission bits are set.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from spikefleet.errors import SpikefleetError
from spikefleet.program.atomic import atomic_write

log = logging.getLogger(__name__)


def exposed(path: Path) -> bool:
    """Whether users other than the owner may read or write ``path``."""
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def warn_if_exposed(path: str | os.PathLike[str], what: str) -> None:
    target = Path(path)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "%s %s is readable by other users (mode %s): run chmod 600 %s",
            what,
            target,
            oct(mode),
            target,
        )


def read_secret(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of a token or key file (SpikefleetError naming it if unreadable)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SpikefleetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    warn_if_exposed(path, what)
    return data


def write_secret(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` atomically with mode 0600 (never readable by others, not even briefly)."""
    return atomic_write(path, data, 0o600)
