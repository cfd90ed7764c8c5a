"""The server's signing key, and the keys it tells agents to trust.

The signing key is created on first start (mode 0600) or given by path: replicas
point ``signing_key`` at one shared secret file so all of them sign alike.

Rotation (docs/scaling.md): ``spikefleet-server keys generate`` a new key,
``keys endorse`` it with the current one into ``trusted_keys_dir`` (agents
learn it from any replica, checking the endorsement against keys they trust),
switch ``signing_key`` to it with the old key's ``.pub`` in ``trusted_keys_dir``
(programs it signed still verify), and retire the old key by removing that
``.pub``: agents stop trusting a learned key the server no longer publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from spikefleet.program.signing import (
    PUBLIC_SUFFIX,
    Endorsement,
    PublicKey,
    SigningKey,
    TrustedKeys,
    load_endorsements,
)

log = structlog.get_logger("spikefleet_server.keys")


def load_or_create(path: Path) -> SigningKey:
    if path.exists():
        return SigningKey.load(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = SigningKey.generate()
    key.save(path)
    log.info("keys.created", path=str(path), key_id=key.key_id)
    return key


@dataclass(frozen=True)
class PublishedKey:
    """A key agents should trust, with the endorsement that lets them learn it, if any."""

    key: PublicKey
    endorsement: Endorsement | None = None


def published_keys(signing: SigningKey, extra_dir: Path | None) -> list[PublicKey]:
    """The keys agents should trust: the signing key's, plus any ``*.pub`` in ``extra_dir``
    (keys of earlier signing keys, so programs they signed still verify after rotation)
    and any key endorsed there (``*.endorsement``: a key about to sign)."""
    return [p.key for p in published(signing, extra_dir)]


def published(signing: SigningKey, extra_dir: Path | None) -> list[PublishedKey]:
    """:func:`published_keys` with each key's endorsement from ``extra_dir``."""
    endorsements = load_endorsements(extra_dir)
    keys: dict[str, PublicKey] = {signing.public_key.key_id: signing.public_key}
    if extra_dir is not None and any(extra_dir.glob(f"*{PUBLIC_SUFFIX}")):
        for key in TrustedKeys.load(extra_dir):
            keys.setdefault(key.key_id, key)
    for key_id, endorsement in endorsements.items():
        keys.setdefault(key_id, endorsement.key)
    return [PublishedKey(key, endorsements.get(key_id)) for key_id, key in keys.items()]


def endorse(key: PublicKey, by: SigningKey, directory: Path) -> Path:
    """Write ``key``'s endorsement by ``by`` into ``directory`` (a trusted_keys_dir)."""
    directory.mkdir(parents=True, exist_ok=True)
    return by.endorse(key).save(directory)
