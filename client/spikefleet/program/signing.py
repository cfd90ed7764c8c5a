"""Ed25519 signatures over program bytes, and the SignedProgram envelope.

Envelope layout (all integers little-endian)::

    magic      4 bytes  b"SFSG"
    version    u16      1
    key_id     u8 length + ASCII
    sha256     32 bytes of the program bytes
    signature  64 bytes, Ed25519 over DOMAIN + sha256
    length     u64      of the program bytes
    program    the program bytes (a spikefleet program, see codec.py)

The signature covers a domain tag and the digest, so a signature made for
something else can never pass as a program signature. A key id is the first
16 hex digits of the sha256 of the raw 32-byte public key.

Key rotation: an :class:`Endorsement` is one key's signature (under its own
domain tag) over another key's raw public bytes. An agent that trusts the
endorser can trust the endorsed key as announced by any server, without
trusting the server itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from spikefleet.errors import KeyFileError, SignatureError
from spikefleet.program.atomic import atomic_write
from spikefleet.program.codec import FILE_IDENTIFIER

MAGIC = b"SFSG"
ENVELOPE_VERSION = 1
DOMAIN = b"spikefleet program signature v1\x00"
ENDORSEMENT_DOMAIN = b"spikefleet key endorsement v1\x00"
PUBLIC_SUFFIX = ".pub"
ENDORSEMENT_SUFFIX = ".endorsement"
_HEAD = struct.Struct("<4sHB")
_LENGTH = struct.Struct("<Q")
_DIGEST_SIZE = 32
_SIGNATURE_SIZE = 64


def _key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


class PublicKey:
    """An Ed25519 public key that verifies program signatures."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self.key_id = _key_id(self.to_bytes())

    def to_bytes(self) -> bytes:
        return self._key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> PublicKey:
        try:
            return cls(Ed25519PublicKey.from_public_bytes(raw))
        except ValueError as exc:
            raise KeyFileError(f"not a raw Ed25519 public key: {exc}") from None

    def to_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_pem(cls, pem: bytes, source: str = "public key") -> PublicKey:
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{source}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{source}: a {type(key).__name__}, expected an Ed25519 key")
        return cls(key)

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write(path, self.to_pem(), 0o644)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PublicKey:
        return cls.from_pem(_read_key_file(path), str(path))

    def verify_digest(self, digest: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, DOMAIN + digest)
        except InvalidSignature:
            return False
        return True

    def verify_endorsement(self, endorsed: PublicKey, signature: bytes) -> bool:
        """Whether ``signature`` is this key vouching for ``endorsed``."""
        try:
            self._key.verify(signature, ENDORSEMENT_DOMAIN + endorsed.to_bytes())
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.to_bytes() == self.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        return f"PublicKey(key_id={self.key_id!r})"


class SigningKey:
    """An Ed25519 private key that signs programs; its file is PEM, mode 0600."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = PublicKey(key.public_key())
        self.key_id = self.public_key.key_id

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def save(self, path: str | os.PathLike[str]) -> None:
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(path, pem, 0o600)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        pem = _read_key_file(path)
        from spikefleet.secret_files import warn_if_exposed

        warn_if_exposed(path, "private key")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: a {type(key).__name__}, expected an Ed25519 key")
        return cls(key)

    def sign_digest(self, digest: bytes) -> bytes:
        return self._key.sign(DOMAIN + digest)

    def endorse(self, key: PublicKey) -> Endorsement:
        """Vouch for ``key``: agents that trust this key will learn to trust it."""
        return Endorsement(key, self.key_id, self._key.sign(ENDORSEMENT_DOMAIN + key.to_bytes()))

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None


class TrustedKeys:
    """The public keys whose signatures a verifier accepts, by key id."""

    def __init__(self, keys: Iterable[PublicKey] = ()) -> None:
        self._keys: dict[str, PublicKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: PublicKey) -> None:
        self._keys[key.key_id] = key

    def discard(self, key_id: str) -> None:
        """Stop trusting ``key_id`` (a retired key); no error if it was not trusted."""
        self._keys.pop(key_id, None)

    def get(self, key_id: str) -> PublicKey | None:
        return self._keys.get(key_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __iter__(self) -> Iterator[PublicKey]:
        return iter(list(self._keys.values()))  # a snapshot: keys may be added meanwhile

    def __len__(self) -> int:
        return len(self._keys)

    @classmethod
    def load(cls, *paths: str | os.PathLike[str]) -> TrustedKeys:
        """Keys from PEM files and from every ``*.pub`` file in directories."""
        trusted = cls()
        for path in map(Path, paths):
            if path.is_dir():
                files = sorted(path.glob(f"*{PUBLIC_SUFFIX}"))
                if not files:
                    raise KeyFileError(f"{path}: no {PUBLIC_SUFFIX} files with trusted keys")
            else:
                files = [path]
            for file in files:
                trusted.add(PublicKey.load(file))
        return trusted

    def __repr__(self) -> str:
        return f"TrustedKeys({sorted(self._keys)})"


@dataclass(frozen=True)
class Endorsement:
    """Key ``endorser`` (a key id) vouches for ``key`` with ``signature``.

    Its file (``<key_id>.endorsement``, JSON) carries the key itself, so a
    directory of them is a set of keys with their proof."""

    key: PublicKey
    endorser: str
    signature: bytes

    def verify(self, endorser: PublicKey) -> bool:
        return endorser.key_id == self.endorser and endorser.verify_endorsement(
            self.key, self.signature
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "key_id": self.key.key_id,
                "public_key_pem": self.key.to_pem().decode(),
                "endorser": self.endorser,
                "signature": self.signature.hex(),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "endorsement") -> Endorsement:
        try:
            data = json.loads(text)
            key = PublicKey.from_pem(str(data["public_key_pem"]).encode(), source)
            endorser, signature = str(data["endorser"]), bytes.fromhex(str(data["signature"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyFileError(
                f"{source}: not an endorsement file (JSON with public_key_pem, endorser, "
                f"signature): {exc}"
            ) from None
        if data.get("key_id", key.key_id) != key.key_id:
            raise KeyFileError(f"{source}: key_id does not match its public key")
        return cls(key, endorser, signature)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / f"{self.key.key_id}{ENDORSEMENT_SUFFIX}"
        atomic_write(path, self.to_json().encode(), 0o644)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Endorsement:
        return cls.from_json(_read_key_file(path), str(path))


def load_endorsements(directory: str | os.PathLike[str] | None) -> dict[str, Endorsement]:
    """Every ``*.endorsement`` in ``directory`` by the endorsed key's id ({} if none)."""
    if directory is None or not Path(directory).is_dir():
        return {}
    found = (Endorsement.load(p) for p in sorted(Path(directory).glob(f"*{ENDORSEMENT_SUFFIX}")))
    return {e.key.key_id: e for e in found}


@dataclass(frozen=True)
class SignedProgram:
    """Program bytes with who signed them; ``sha256`` is the hex digest of ``program``."""

    program: bytes
    sha256: str
    key_id: str
    signature: bytes

    def to_bytes(self) -> bytes:
        key_id = self.key_id.encode("ascii")
        return b"".join(
            [
                _HEAD.pack(MAGIC, ENVELOPE_VERSION, len(key_id)),
                key_id,
                bytes.fromhex(self.sha256),
                self.signature,
                _LENGTH.pack(len(self.program)),
                self.program,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedProgram:
        """Parse an envelope (without verifying it); SignatureError if it is malformed."""
        data = bytes(data)
        if len(data) < _HEAD.size:
            if MAGIC.startswith(data[:4]):
                raise SignatureError(
                    f"signed program is truncated: {len(data)} bytes", reason="truncated"
                )
            raise SignatureError("not a signed spikefleet program (no envelope)", "malformed")
        magic, version, id_len = _HEAD.unpack_from(data)
        if data[4:8] == FILE_IDENTIFIER:
            raise SignatureError(
                "not a signed spikefleet program: this is a plain (unsigned) program; "
                "sign it with 'spikefleet sign'",
                reason="malformed",
            )
        if magic != MAGIC:
            raise SignatureError(
                f"not a signed spikefleet program: starts with {magic!r}, expected {MAGIC!r}",
                reason="malformed",
            )
        if version != ENVELOPE_VERSION:
            raise SignatureError(
                f"unsupported signed-program envelope version {version} (this spikefleet "
                f"reads {ENVELOPE_VERSION}); upgrade spikefleet",
                reason="malformed",
            )
        fixed = _HEAD.size + id_len + _DIGEST_SIZE + _SIGNATURE_SIZE + _LENGTH.size
        if len(data) < fixed:
            raise SignatureError(
                f"signed program is truncated: {len(data)} bytes, the envelope header alone "
                f"needs {fixed}",
                reason="truncated",
            )
        at = _HEAD.size
        try:
            key_id = data[at : at + id_len].decode("ascii")
        except UnicodeDecodeError:
            raise SignatureError("signed program has a non-ASCII key id", "malformed") from None
        at += id_len
        digest = data[at : at + _DIGEST_SIZE]
        at += _DIGEST_SIZE
        signature = data[at : at + _SIGNATURE_SIZE]
        at += _SIGNATURE_SIZE
        (length,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if len(data) - at < length:
            raise SignatureError(
                f"signed program is truncated: the envelope promises {length} program bytes, "
                f"{len(data) - at} are present",
                reason="truncated",
            )
        if len(data) - at > length:
            raise SignatureError(
                f"signed program has {len(data) - at - length} unexpected bytes after the program",
                reason="malformed",
            )
        return cls(data[at:], digest.hex(), key_id, signature)


def is_signed(data: bytes) -> bool:
    """Whether ``data`` starts like a SignedProgram envelope (not whether it verifies)."""
    return data[:4] == MAGIC


def sign(program_bytes: bytes, key: SigningKey) -> SignedProgram:
    digest = hashlib.sha256(program_bytes).digest()
    return SignedProgram(bytes(program_bytes), digest.hex(), key.key_id, key.sign_digest(digest))


def verify(signed: bytes | SignedProgram, trusted: TrustedKeys) -> bytes:
    """The program bytes, once the envelope parses, its key is trusted and both the
    digest and the signature match; SignatureError naming the reason otherwise."""
    envelope = signed if isinstance(signed, SignedProgram) else SignedProgram.from_bytes(signed)
    key = trusted.get(envelope.key_id)
    if key is None:
        raise SignatureError(
            f"signed by unknown key {envelope.key_id!r}; trusted keys are "
            f"{sorted(k.key_id for k in trusted) or 'none'} (add its .pub to the trusted keys)",
            reason="unknown-key",
        )
    digest = hashlib.sha256(envelope.program).digest()
    if digest.hex() != envelope.sha256:
        raise SignatureError(
            "signed program is tampered: its bytes do not match the signed sha256",
            reason="tampered",
        )
    if len(envelope.signature) != _SIGNATURE_SIZE or not key.verify_digest(
        digest, envelope.signature
    ):
        raise SignatureError(
            f"signed program is tampered: the signature does not verify with key {key.key_id}",
            reason="tampered",
        )
    return envelope.program
