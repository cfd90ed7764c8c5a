"""Carries out assignments: fetch, verify, load, write a slot, switch; or roll back.

Runs on its own thread so the control stream keeps reading while a program
downloads. Only the newest assignment matters: older queued ones are skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

from spikefleet.errors import InstallError, SpikefleetError
from spikefleet.program.signing import SignedProgram
from spikefleet.v1 import fleet_pb2
from spikefleet_agent.programs.slots import SlotStore, verify_signed
from spikefleet_agent.runtime import Runtime

log = structlog.get_logger(__name__)

#: Reasons that mean "this program must not run" rather than "try again later".
REFUSE_REASONS = {"tampered", "truncated", "unknown-key", "malformed", "unsigned", "sha256"}

Status = fleet_pb2.InstallReport.Status


class Installer:
    def __init__(
        self,
        slots: SlotStore,
        runtime: Runtime,
        *,
        fetch: Callable[[str], bytes],
        report: Callable[[fleet_pb2.InstallReport], None],
        on_change: Callable[[], None] = lambda: None,
        learn_keys: Callable[[], object] = lambda: None,
    ) -> None:
        """``learn_keys`` asks the server for its keys; it runs before a program signed by a
        key this agent does not know yet is verified (the key may just have rotated)."""
        self._slots = slots
        self._learn_keys = learn_keys
        self._runtime = runtime
        self._fetch = fetch
        self._report = report
        self._on_change = on_change
        self._pending: fleet_pb2.Assignment | None = None
        self._last_key: tuple[int, str, str] | None = None
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="installer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def submit(self, assignment: fleet_pb2.Assignment) -> None:
        """Queue ``assignment`` unless it repeats the last one (the server may send the same
        generation twice around a reconnect)."""
        key = (assignment.generation, assignment.sha256, assignment.shadow_sha256)
        with self._cond:
            if assignment.generation and key == self._last_key:
                return
            self._last_key = key
            self._pending = assignment
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                assignment, self._pending = self._pending, None
            if assignment is None:
                continue
            try:
                self.apply(assignment)
            except Exception:
                log.exception("install.crashed", sha256=assignment.sha256)

    def apply(self, assignment: fleet_pb2.Assignment) -> None:
        if assignment.rollback:
            self._rollback(assignment.generation)
        elif assignment.sha256:
            self._install(assignment.sha256, assignment.generation)
        self._apply_shadow(assignment.shadow_sha256)

    def _send(
        self, sha256: str, status: Any, generation: int, reason: str = "", detail: str = ""
    ) -> None:
        self._report(
            fleet_pb2.InstallReport(
                sha256=sha256, status=status, reason=reason, detail=detail, generation=generation
            )
        )

    def _install(self, sha256: str, generation: int) -> None:
        active = self._runtime.active
        if active is not None and active.sha256 == sha256:
            self._send(sha256, Status.INSTALLED, generation, detail="already active")
            return
        log.info("install.start", sha256=sha256, generation=generation)
        try:
            signed = self._fetch(sha256)
            self._know_signer(signed)
            verified = verify_signed(
                signed, self._slots.trusted, sha256, max_engine_bytes=self._slots.max_engine_bytes
            )
            try:
                loaded = self._runtime.load(sha256, verified.program)
            except Exception as exc:  # MemoryError too: whatever load does, report it
                raise InstallError(
                    f"the backend cannot load the program: {type(exc).__name__}: {exc}", "load"
                ) from exc
            slot = self._slots.inactive_slot()
            self._slots.write(slot, signed)
            self._slots.activate(slot, sha256)
            self._runtime.swap(loaded)
        except InstallError as exc:
            status = Status.REFUSED if exc.reason in REFUSE_REASONS else Status.FAILED
            log.warning("install.rejected", sha256=sha256, reason=exc.reason, error=str(exc))
            self._send(sha256, status, generation, exc.reason, str(exc))
            return
        except OSError as exc:
            log.error("install.disk", sha256=sha256, error=str(exc))
            self._send(sha256, Status.FAILED, generation, "disk", str(exc))
            return
        except Exception as exc:  # anything else (MemoryError decoding it): still reported
            log.exception("install.failed", sha256=sha256)
            self._send(sha256, Status.FAILED, generation, "error", f"{type(exc).__name__}: {exc}")
            return
        log.info("install.done", sha256=sha256, slot=slot)
        self._send(sha256, Status.INSTALLED, generation)
        self._on_change()

    def _know_signer(self, signed: bytes) -> None:
        """Learn the server's keys first if ``signed`` names a key not trusted yet."""
        try:
            key_id = SignedProgram.from_bytes(signed).key_id
        except SpikefleetError:
            return  # verification says why
        if key_id in self._slots.trusted:  # type: ignore[operator]
            return
        try:
            self._learn_keys()
        except SpikefleetError as exc:
            log.warning("install.keys_unavailable", key_id=key_id, error=str(exc))

    def _rollback(self, generation: int) -> None:
        try:
            previous = self._slots.previous()
            loaded = self._runtime.load(previous.sha256, previous.program)
            self._slots.activate(previous.slot, previous.sha256)
            self._runtime.swap(loaded)
        except Exception as exc:  # MemoryError loading it too
            reason = getattr(exc, "reason", "rollback")
            self._send("", Status.FAILED, generation, reason, f"{type(exc).__name__}: {exc}")
            return
        log.info("install.rolled_back", sha256=previous.sha256)
        self._send(previous.sha256, Status.ROLLED_BACK, generation)
        self._on_change()

    def _apply_shadow(self, sha256: str) -> None:
        current = self._runtime.shadow
        if not sha256:
            if current is not None:
                self._runtime.set_shadow(None)
                self._on_change()
            return
        if current is not None and current.sha256 == sha256:
            return
        try:
            signed = self._fetch(sha256)
            self._know_signer(signed)
            verified = verify_signed(
                signed, self._slots.trusted, sha256, max_engine_bytes=self._slots.max_engine_bytes
            )
            self._runtime.set_shadow(self._runtime.load(sha256, verified.program))
        except Exception as exc:  # a shadow that cannot load only ends its evaluation
            log.warning("install.shadow_failed", sha256=sha256, error=str(exc))
            return
        self._on_change()
