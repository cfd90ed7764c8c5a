"""A/B program slots with an atomically replaced "active" pointer.

Layout under the agent's state directory::

    programs/a/program.signed   signed program bytes (SignedProgram.to_bytes())
    programs/b/program.signed
    programs/active.json        {"slot": "a", "sha256": ..., "previous": {"slot": "b", ...}}

A new program is written into the slot that is NOT active (temp file, fsync,
rename, fsync of the directory), and only then does the pointer move (same
dance). A kill -9 at any instant therefore leaves the pointer naming a slot
that holds a complete, signed program; at boot every slot is verified again
against the pinned keys before it may run, so a slot damaged on disk is never
loaded and the other slot takes over.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import structlog

from spikefleet.errors import InstallError, ProgramFormatError, SignatureError
from spikefleet.program.model import Program

log = structlog.get_logger(__name__)

SLOTS = ("a", "b")
PROGRAM_FILE = "program.signed"
POINTER_FILE = "active.json"


@dataclass
class SlotState:
    """What the pointer says: the active slot and the one kept for rollback."""

    slot: str
    sha256: str
    previous_slot: str = ""
    previous_sha256: str = ""


@dataclass
class SlotProgram:
    """A verified, decoded program and where it came from."""

    sha256: str
    program: Program
    slot: str = ""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def verify_signed(
    signed_bytes: bytes,
    trusted: object,
    expected_sha256: str = "",
    *,
    max_engine_bytes: int | None = None,
) -> SlotProgram:
    """Verify against the pinned keys, check the sha256, decode (refusing a program whose
    engine needs more than ``max_engine_bytes``). Raises InstallError."""
    from spikefleet.program.codec import decode
    from spikefleet.program.signing import verify

    try:
        program_bytes = verify(signed_bytes, trusted)  # type: ignore[arg-type]
    except SignatureError as exc:
        raise InstallError(f"signature check failed: {exc}", exc.reason) from exc
    sha256 = hashlib.sha256(program_bytes).hexdigest()
    if expected_sha256 and sha256 != expected_sha256:
        raise InstallError(
            f"program sha256 is {sha256}, the assignment asked for {expected_sha256}", "sha256"
        )
    try:
        program = decode(program_bytes, max_engine_bytes=max_engine_bytes)
    except ProgramFormatError as exc:
        raise InstallError(f"signed program does not decode: {exc}", "malformed") from exc
    return SlotProgram(sha256=sha256, program=program)


class SlotStore:
    def __init__(self, root: Path, trusted: object, *, max_engine_bytes: int | None = None) -> None:
        self.root = root
        self.trusted = trusted
        self.max_engine_bytes = max_engine_bytes
        for slot in SLOTS:
            (root / slot).mkdir(parents=True, exist_ok=True)

    def state(self) -> SlotState | None:
        try:
            data = json.loads((self.root / POINTER_FILE).read_text())
            previous = data.get("previous") or {}
            return SlotState(
                slot=data["slot"],
                sha256=data["sha256"],
                previous_slot=previous.get("slot", ""),
                previous_sha256=previous.get("sha256", ""),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("slots.pointer_unreadable", path=str(self.root / POINTER_FILE))
            return None

    def read_slot(self, slot: str, expected_sha256: str = "") -> SlotProgram:
        try:
            data = (self.root / slot / PROGRAM_FILE).read_bytes()
        except FileNotFoundError:
            raise InstallError(f"slot {slot} is empty", "missing") from None
        loaded = verify_signed(
            data, self.trusted, expected_sha256, max_engine_bytes=self.max_engine_bytes
        )
        loaded.slot = slot
        return loaded

    def load_active(self, exclude: Collection[str] = ()) -> SlotProgram | None:
        """The program to serve at boot: the pointer's slot if it verifies, else the other
        (the pointer then moves to it). ``exclude``: slots whose program verified but
        could not run."""
        state = self.state()
        order = [state.slot] if state else []
        order += [s for s in SLOTS if s not in order]
        for slot in order:
            if slot in exclude:
                continue
            expected = state.sha256 if state and slot == state.slot else ""
            try:
                loaded = self.read_slot(slot, expected)
            except InstallError as exc:
                if state and slot == state.slot:
                    log.error("slots.active_unusable", slot=slot, reason=exc.reason, error=str(exc))
                continue
            if state is None or slot != state.slot:
                self._point(loaded.slot, loaded.sha256)
            return loaded
        return None

    def inactive_slot(self) -> str:
        state = self.state()
        return "b" if state is not None and state.slot == "a" else "a"

    def write(self, slot: str, signed_bytes: bytes) -> None:
        write_atomic(self.root / slot / PROGRAM_FILE, signed_bytes)

    def activate(self, slot: str, sha256: str) -> SlotState:
        return self._point(slot, sha256)

    def previous(self) -> SlotProgram:
        """The rollback candidate, verified; InstallError if there is none."""
        state = self.state()
        if state is None or not state.previous_slot:
            raise InstallError("no previous program to roll back to", "no-previous")
        return self.read_slot(state.previous_slot, state.previous_sha256)

    def _point(self, slot: str, sha256: str) -> SlotState:
        current = self.state()
        new = SlotState(slot=slot, sha256=sha256)
        if current is not None and current.slot != slot:
            new.previous_slot, new.previous_sha256 = current.slot, current.sha256
        elif current is not None:
            new.previous_slot, new.previous_sha256 = current.previous_slot, current.previous_sha256
        body: dict[str, object] = {"slot": new.slot, "sha256": new.sha256}
        if new.previous_slot:
            body["previous"] = {"slot": new.previous_slot, "sha256": new.previous_sha256}
        write_atomic(self.root / POINTER_FILE, json.dumps(body).encode())
        return new
