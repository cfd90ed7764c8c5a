"""A bounds-checked FlatBuffers table reader.

The Python flatbuffers runtime trusts its input (it has no verifier), so
program bytes from disk or the network are read through this instead: every
offset, vtable and vector is checked against the buffer before use, and the
total memory a decode may materialize is capped relative to the buffer size,
so malformed or hostile bytes fail with ProgramFormatError instead of
crashing, looping or allocating without bound.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from spikefleet.errors import ProgramFormatError

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_SCALARS = {"B": _U8, "H": _U16, "I": _U32, "i": _I32, "q": _I64, "Q": _U64}

# An honest buffer expands at most 8x (1-bit weights unpack to int8). Each table
# read is charged as if it were large, which bounds the work a buffer whose
# offsets all point at one table can cause; honest programs have few tables.
_EXPANSION = 8
_SLACK = 1 << 20
_TABLE_COST = 512


class Buffer:
    """The bytes being read, with the budget of memory the decode may still use."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.size = len(self.data)
        self.budget = _EXPANSION * self.size + _SLACK

    def spend(self, nbytes: int, what: str) -> None:
        self.budget -= nbytes
        if self.budget < 0:
            raise ProgramFormatError(
                f"{what}: the buffer's offsets expand to more data than it holds "
                "(overlapping or shared regions); the program file is corrupt"
            )

    def check(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise ProgramFormatError(
                f"{what}: offset {pos}+{length} is outside the {self.size}-byte buffer "
                "(truncated or corrupt program)"
            )

    def scalar(self, fmt: str, pos: int, what: str) -> int:
        codec = _SCALARS[fmt]
        self.check(pos, codec.size, what)
        return int(codec.unpack_from(self.data, pos)[0])

    def root(self, identifier: bytes, what: str) -> Table:
        if self.size < 8:
            raise ProgramFormatError(
                f"program is {self.size} bytes, too short to be a spikefleet program"
            )
        found = self.data[4:8]
        if found != identifier:
            raise ProgramFormatError(
                f"not a spikefleet program: file identifier is {found!r}, expected "
                f"{identifier!r} (is this a signed envelope or another format?)"
            )
        return self.table(self.scalar("I", 0, "root offset"), what)

    def table(self, pos: int, what: str) -> Table:
        self.spend(_TABLE_COST, what)
        vtable = pos - self.scalar("i", pos, what)
        vt_len = self.scalar("H", vtable, f"{what} vtable")
        table_len = self.scalar("H", vtable + 2, f"{what} vtable")
        if vt_len < 4 or vt_len % 2:
            raise ProgramFormatError(f"{what}: malformed vtable of length {vt_len}")
        self.check(vtable, vt_len, f"{what} vtable")
        if table_len < 4:
            raise ProgramFormatError(f"{what}: malformed table of length {table_len}")
        self.check(pos, table_len, what)
        return Table(self, pos, vtable, vt_len, table_len, what)


class Table:
    """One table: fields are addressed by slot number (declaration order in the .fbs)."""

    def __init__(
        self, buf: Buffer, pos: int, vtable: int, vt_len: int, table_len: int, what: str
    ) -> None:
        self.buf = buf
        self.pos = pos
        self.vtable = vtable
        self.vt_len = vt_len
        self.table_len = table_len
        self.what = what

    def _field(self, slot: int, size: int, name: str) -> int:
        """Absolute position of a present field, or 0 when it is absent."""
        entry = 4 + 2 * slot
        if entry + 2 > self.vt_len:
            return 0
        offset = self.buf.scalar("H", self.vtable + entry, f"{self.what}.{name}")
        if offset == 0:
            return 0
        if offset + size > self.table_len:
            raise ProgramFormatError(
                f"{self.what}.{name}: field lies outside its table (corrupt program)"
            )
        return self.pos + offset

    def scalar(self, slot: int, fmt: str, default: int, name: str) -> int:
        pos = self._field(slot, _SCALARS[fmt].size, name)
        return default if pos == 0 else self.buf.scalar(fmt, pos, f"{self.what}.{name}")

    def double(self, slot: int, default: float, name: str) -> float:
        pos = self._field(slot, _F64.size, name)
        if pos == 0:
            return default
        self.buf.check(pos, _F64.size, f"{self.what}.{name}")
        return float(_F64.unpack_from(self.buf.data, pos)[0])

    def _target(self, slot: int, name: str) -> int | None:
        pos = self._field(slot, 4, name)
        if pos == 0:
            return None
        return pos + self.buf.scalar("I", pos, f"{self.what}.{name}")

    def table(self, slot: int, name: str) -> Table | None:
        target = self._target(slot, name)
        return None if target is None else self.buf.table(target, f"{self.what}.{name}")

    def _vector(self, slot: int, elem_size: int, name: str) -> tuple[int, int] | None:
        target = self._target(slot, name)
        if target is None:
            return None
        what = f"{self.what}.{name}"
        length = self.buf.scalar("I", target, what)
        self.buf.check(target + 4, length * elem_size, what)
        return target + 4, length

    def string(self, slot: int, name: str) -> str | None:
        vec = self._vector(slot, 1, name)
        if vec is None:
            return None
        start, length = vec
        self.buf.spend(length, f"{self.what}.{name}")
        try:
            return self.buf.data[start : start + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProgramFormatError(f"{self.what}.{name}: not valid UTF-8 ({exc})") from None

    def bytes(self, slot: int, name: str) -> bytes | None:
        vec = self._vector(slot, 1, name)
        if vec is None:
            return None
        start, length = vec
        self.buf.spend(length, f"{self.what}.{name}")
        return self.buf.data[start : start + length]

    def array(self, slot: int, dtype: str, name: str) -> npt.NDArray[Any] | None:
        """A vector of little-endian scalars as a fresh native numpy array."""
        le = np.dtype(dtype).newbyteorder("<")
        vec = self._vector(slot, le.itemsize, name)
        if vec is None:
            return None
        start, length = vec
        self.buf.spend(length * le.itemsize, f"{self.what}.{name}")
        raw = np.frombuffer(self.buf.data, dtype=le, count=length, offset=start)
        return raw.astype(le.newbyteorder("="))

    def tables(self, slot: int, name: str) -> list[Table] | None:
        vec = self._vector(slot, 4, name)
        if vec is None:
            return None
        start, length = vec
        out = []
        for i in range(length):
            at = start + 4 * i
            target = at + self.buf.scalar("I", at, f"{self.what}.{name}[{i}]")
            out.append(self.buf.table(target, f"{self.what}.{name}[{i}]"))
        return out

    def strings(self, slot: int, name: str) -> list[str] | None:
        vec = self._vector(slot, 4, name)
        if vec is None:
            return None
        start, length = vec
        out = []
        for i in range(length):
            at = start + 4 * i
            what = f"{self.what}.{name}[{i}]"
            target = at + self.buf.scalar("I", at, what)
            size = self.buf.scalar("I", target, what)
            self.buf.check(target + 4, size, what)
            self.buf.spend(size + 64, what)
            try:
                out.append(self.buf.data[target + 4 : target + 4 + size].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ProgramFormatError(f"{what}: not valid UTF-8 ({exc})") from None
        return out
