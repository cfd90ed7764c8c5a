"""The keys programs must be signed by: pinned in the config, plus keys learned by rotation.

Pinned keys (``trusted_keys``) are the root of trust and never change at run
time. A server announces its keys through the TrustedKeys call; the agent
learns an announced key only with an endorsement that verifies against a key
it already trusts (pinned, learned before, or learned in the same round), so a
server that lies cannot make it trust a key. Learned keys live in
``<state_dir>/keys`` (so programs they signed verify at boot without a server),
and one the server stops announcing is retired: forgotten, and programs it
signed are refused from then on. Pinned keys are only ever changed in the
config.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from spikefleet.errors import KeyFileError
from spikefleet.program.signing import (
    ENDORSEMENT_SUFFIX,
    Endorsement,
    PublicKey,
    TrustedKeys,
    load_endorsements,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Announced:
    """One key as a server announced it, with its endorsement if it has one."""

    key: PublicKey
    endorsement: Endorsement | None = None


@dataclass
class KeyChanges:
    learned: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # key id -> why


class KeyRing:
    """``trusted`` is the live set the slots verify with; it is changed in place."""

    def __init__(self, pinned: TrustedKeys, directory: Path) -> None:
        self.pinned_ids = frozenset(k.key_id for k in pinned)
        self.directory = directory
        self.trusted = TrustedKeys(pinned)
        self._lock = threading.Lock()
        self._learned: dict[str, Endorsement] = {}
        try:
            stored = load_endorsements(directory)
        except KeyFileError as exc:
            log.error("keys.store_unreadable", error=str(exc), hint=f"delete {directory}")
            stored = {}
        # Re-check the chain at every start: a file dropped into the directory by hand
        # is no more trusted than one a server announced.
        accepted, _ = self._chain(stored.values(), {k.key_id: k for k in pinned})
        for key_id in accepted:
            self._learned[key_id] = stored[key_id]
            self.trusted.add(stored[key_id].key)

    @property
    def learned(self) -> list[str]:
        with self._lock:
            return sorted(self._learned)

    @staticmethod
    def _chain(
        endorsements: Iterable[Endorsement], roots: dict[str, PublicKey]
    ) -> tuple[list[str], dict[str, str]]:
        """The endorsed keys reachable from ``roots`` (in the order they chain), and why
        each of the others is not."""
        waiting = {e.key.key_id: e for e in endorsements if e.key.key_id not in roots}
        known = dict(roots)
        accepted: list[str] = []
        progress = True
        while progress:
            progress = False
            for key_id, endorsement in list(waiting.items()):
                endorser = known.get(endorsement.endorser)
                if endorser is not None and endorsement.verify(endorser):
                    known[key_id] = endorsement.key
                    accepted.append(key_id)
                    del waiting[key_id]
                    progress = True
        refused = {
            key_id: (
                f"endorsed by {e.endorser}, which this agent does not trust"
                if e.endorser not in known
                else f"its endorsement by {e.endorser} does not verify"
            )
            for key_id, e in waiting.items()
        }
        return accepted, refused

    def follow(self, announced: Iterable[Announced]) -> KeyChanges:
        """Learn the endorsed keys a server announces and retire learned keys it no
        longer announces (an empty announcement retires nothing: it is no answer)."""
        announced = list(announced)
        changes = KeyChanges()
        if not announced:
            return changes
        with self._lock:
            ids = {a.key.key_id for a in announced}
            roots = {k.key_id: k for k in self.trusted}
            endorsements = [a.endorsement for a in announced if a.endorsement is not None]
            accepted, refused = self._chain(endorsements, roots)
            by_id = {e.key.key_id: e for e in endorsements}
            for key_id in accepted:
                endorsement = by_id[key_id]
                self.directory.mkdir(parents=True, exist_ok=True)
                endorsement.save(self.directory)
                self._learned[key_id] = endorsement
                self.trusted.add(endorsement.key)
                changes.learned.append(key_id)
            for a in announced:
                key_id = a.key.key_id
                if key_id in roots or key_id in accepted:
                    continue
                changes.refused[key_id] = refused.get(key_id, "it carries no endorsement")
            for key_id in sorted(set(self._learned) - ids):
                del self._learned[key_id]
                self.trusted.discard(key_id)
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / f"{key_id}{ENDORSEMENT_SUFFIX}").unlink()
                changes.retired.append(key_id)
        for key_id in changes.learned:
            log.info("keys.learned", key_id=key_id, endorser=by_id[key_id].endorser)
        for key_id in changes.retired:
            log.warning("keys.retired", key_id=key_id, hint="programs it signed are refused now")
        for key_id, why in changes.refused.items():
            log.warning(
                "keys.not_learned",
                key_id=key_id,
                why=why,
                hint="endorse it with a key the agents trust "
                "(spikefleet-server keys endorse), or pin it in trusted_keys",
            )
        return changes
