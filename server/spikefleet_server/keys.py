"""The server's signing key: created on first start (mode 0600), or given by path."""

from __future__ import annotations

from pathlib import Path

import structlog

from spikefleet.program.signing import PublicKey, SigningKey, TrustedKeys

log = structlog.get_logger("spikefleet_server.keys")


def load_or_create(path: Path) -> SigningKey:
    if path.exists():
        return SigningKey.load(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = SigningKey.generate()
    key.save(path)
    log.info("keys.created", path=str(path), key_id=key.key_id)
    return key


def published_keys(signing: SigningKey, extra_dir: Path | None) -> list[PublicKey]:
    """The keys agents should trust: the signing key's, plus any ``*.pub`` in ``extra_dir``
    (keys of earlier signing keys, so programs they signed still verify after rotation)."""
    keys: dict[str, PublicKey] = {signing.public_key.key_id: signing.public_key}
    if extra_dir is not None and extra_dir.is_dir():
        for key in TrustedKeys.load(extra_dir):
            keys.setdefault(key.key_id, key)
    return list(keys.values())
