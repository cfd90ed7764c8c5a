"""Akida's own model files (.fbz) <-> Programs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from spikefleet.brainchip._akida import require_akida
from spikefleet.brainchip.convert import from_akida, to_akida
from spikefleet.errors import ProgramFormatError
from spikefleet.program.model import Program


def load_fbz(path: str | os.PathLike[str]) -> Program:
    """The Program of an akida .fbz file; ``program.fbz`` keeps the file's bytes."""
    akida = require_akida("reading an akida .fbz model")
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ProgramFormatError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        model = akida.Model(str(source))
    except (RuntimeError, ValueError) as exc:
        raise ProgramFormatError(
            f"{source} is not an akida model file akida 2.19.3 can load: {exc}"
        ) from None
    program = from_akida(model, name=source.stem)
    program.fbz = data
    return program


def fbz_bytes(program: Program) -> bytes:
    """The .fbz bytes akida writes for ``program``."""
    model = to_akida(program)
    with tempfile.TemporaryDirectory(prefix="spikefleet-fbz-") as tmp:
        target = Path(tmp) / "model.fbz"
        model.save(str(target))
        return target.read_bytes()


def save_fbz(program: Program, path: str | os.PathLike[str]) -> None:
    """Write ``program`` as an akida .fbz file (built from its layers)."""
    require_akida("writing an akida .fbz model")
    data = fbz_bytes(program)
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise ProgramFormatError(f"cannot write {path}: {exc.strerror or exc}") from None
