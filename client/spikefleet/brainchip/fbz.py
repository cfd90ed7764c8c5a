"""Akida's own model files (.fbz) <-> Programs.

An .fbz holds akida's layers and nothing else, so what the host needs beyond
them (the read-out's output scales, class labels, the input spec, the name)
travels in a trailer after akida's flatbuffer: the JSON, its 4-byte little-
endian length, then the magic ``SFMETA01``. akida 2.19.3 loads such a file and
computes the same outputs (it reads the flatbuffer and ignores what follows);
a file without the trailer (one akida wrote) imports as before.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from spikefleet.brainchip._akida import require_akida
from spikefleet.brainchip.convert import from_akida, to_akida
from spikefleet.errors import ProgramFormatError
from spikefleet.program.model import Program

MAGIC = b"SFMETA01"
_MAX_TRAILER = 1 << 20


def _trailer(program: Program) -> bytes:
    meta: dict[str, Any] = {"name": program.name, "labels": list(program.labels)}
    if program.output_scales is not None:
        meta["output_scales"] = [float(v) for v in np.asarray(program.output_scales).reshape(-1)]
    if program.input_spec is not None:
        meta["input_spec"] = program.input_spec.to_dict()
    body = json.dumps(meta, sort_keys=True).encode()
    return body + len(body).to_bytes(4, "little") + MAGIC


def split_trailer(data: bytes) -> tuple[bytes, dict[str, Any] | None]:
    """(akida's bytes, spikefleet's metadata or None when the file has no trailer)."""
    if not data.endswith(MAGIC) or len(data) < len(MAGIC) + 4:
        return data, None
    end = len(data) - len(MAGIC)
    length = int.from_bytes(data[end - 4 : end], "little")
    start = end - 4 - length
    if length > _MAX_TRAILER or start < 0:
        raise ProgramFormatError("the .fbz's spikefleet trailer is truncated or corrupt")
    try:
        meta = json.loads(data[start : end - 4])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProgramFormatError(f"the .fbz's spikefleet trailer is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ProgramFormatError("the .fbz's spikefleet trailer is not a JSON object")
    return data[:start], meta


def _apply(program: Program, meta: dict[str, Any]) -> None:
    from spikefleet.events.spec import InputSpec

    try:
        if meta.get("name"):
            program.name = str(meta["name"])
        program.labels = [str(label) for label in meta.get("labels", [])]
        if meta.get("output_scales") is not None:
            program.output_scales = np.asarray(meta["output_scales"], dtype=np.float32)
        if meta.get("input_spec") is not None:
            program.input_spec = InputSpec.from_dict(meta["input_spec"])
    except (TypeError, ValueError) as exc:
        raise ProgramFormatError(f"the .fbz's spikefleet trailer is invalid ({exc})") from None


def load_fbz(path: str | os.PathLike[str]) -> Program:
    """The Program of an akida .fbz file; ``program.fbz`` keeps the file's bytes.

    Output scales, labels, input spec and name come back from spikefleet's
    trailer when the file has one (``export-akida`` writes it).
    """
    akida = require_akida("reading an akida .fbz model")
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ProgramFormatError(f"cannot read {source}: {exc.strerror or exc}") from None
    _, meta = split_trailer(data)
    try:
        model = akida.Model(str(source))
    except (RuntimeError, ValueError) as exc:
        raise ProgramFormatError(
            f"{source} is not an akida model file akida 2.19.3 can load: {exc}"
        ) from None
    program = from_akida(model, name=source.stem)
    if meta is not None:
        _apply(program, meta)
    program.fbz = data
    return program


def fbz_bytes(program: Program) -> bytes:
    """The .fbz bytes akida writes for ``program``, with spikefleet's trailer."""
    model = to_akida(program)
    with tempfile.TemporaryDirectory(prefix="spikefleet-fbz-") as tmp:
        target = Path(tmp) / "model.fbz"
        model.save(str(target))
        return target.read_bytes() + _trailer(program)


def save_fbz(program: Program, path: str | os.PathLike[str]) -> None:
    """Write ``program`` as an akida .fbz file (built from its layers)."""
    require_akida("writing an akida .fbz model")
    data = fbz_bytes(program)
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise ProgramFormatError(f"cannot write {path}: {exc.strerror or exc}") from None
