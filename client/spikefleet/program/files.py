"""Program files on disk: plain (``codec`` bytes) or signed (a SignedProgram envelope)."""

from __future__ import annotations

import os
from pathlib import Path

from spikefleet.errors import ProgramFormatError, SignatureError
from spikefleet.program import codec
from spikefleet.program.atomic import atomic_write
from spikefleet.program.model import Program
from spikefleet.program.signing import SignedProgram, TrustedKeys, is_signed, verify


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ProgramFormatError(
            f"cannot read program file {path}: {exc.strerror or exc}"
        ) from None


def load_program_bytes(
    path: str | os.PathLike[str],
    trusted: TrustedKeys | None = None,
    *,
    verify_signature: bool = True,
) -> bytes:
    """The program bytes in ``path``, checked as :func:`load_program` describes."""
    data = read_bytes(path)
    if is_signed(data):
        if not verify_signature:
            return SignedProgram.from_bytes(data).program
        if trusted is None:
            raise SignatureError(
                f"{path} is signed: pass trusted keys to check it (or verify=False to skip it)",
                reason="unknown-key",
            )
        return verify(data, trusted)
    if trusted is not None and verify_signature:
        raise SignatureError(
            f"{path} is not signed, but trusted keys were given: sign it with "
            "'spikefleet sign' or load it without trusted keys",
            reason="unsigned",
        )
    return data


def load_program(
    path: str | os.PathLike[str],
    trusted: TrustedKeys | None = None,
    *,
    verify: bool = True,
) -> Program:
    """Read a plain or signed program file.

    A signed file is verified against ``trusted`` (required unless ``verify=False``).
    Giving ``trusted`` also means the file must be signed: a plain program is refused.
    """
    return codec.decode(load_program_bytes(path, trusted, verify_signature=verify))


def save_program(path: str | os.PathLike[str], data: bytes | Program | SignedProgram) -> Path:
    """Write a program (encoded if needed) atomically: temp file, fsync, rename."""
    if isinstance(data, Program):
        data = codec.encode(data)
    elif isinstance(data, SignedProgram):
        data = data.to_bytes()
    return atomic_write(path, bytes(data))
