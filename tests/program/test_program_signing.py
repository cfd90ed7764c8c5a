"""Signing: only untouched programs signed by a trusted key verify, and each
failure says which of tampered / truncated / unknown-key / malformed it is."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from support.program_factory import reference_program

from spikefleet.errors import KeyFileError, SignatureError
from spikefleet.program.codec import encode
from spikefleet.program.signing import (
    Endorsement,
    PublicKey,
    SignedProgram,
    SigningKey,
    TrustedKeys,
    is_signed,
    load_endorsements,
    sign,
    verify,
)

PROGRAM = encode(reference_program())


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def signed(key: SigningKey) -> bytes:
    return sign(PROGRAM, key).to_bytes()


def test_verify_returns_the_program_bytes(key: SigningKey, signed: bytes) -> None:
    assert is_signed(signed)
    assert verify(signed, TrustedKeys([key.public_key])) == PROGRAM


def test_envelope_round_trips(key: SigningKey) -> None:
    envelope = sign(PROGRAM, key)
    assert SignedProgram.from_bytes(envelope.to_bytes()) == envelope
    assert envelope.key_id == key.key_id and len(envelope.sha256) == 64


def test_verify_accepts_a_parsed_envelope(key: SigningKey, signed: bytes) -> None:
    assert verify(SignedProgram.from_bytes(signed), TrustedKeys([key.public_key])) == PROGRAM


def test_a_flipped_program_byte_is_tampered(key: SigningKey, signed: bytes) -> None:
    corrupt = bytearray(signed)
    corrupt[-100] ^= 0x01
    with pytest.raises(SignatureError, match="tampered") as caught:
        verify(bytes(corrupt), TrustedKeys([key.public_key]))
    assert caught.value.reason == "tampered"


def test_a_replaced_program_with_its_own_digest_is_tampered(key: SigningKey) -> None:
    genuine = sign(PROGRAM, key)
    other = encode(reference_program(seed=1))
    forged = SignedProgram(other, hashlib.sha256(other).hexdigest(), key.key_id, genuine.signature)
    with pytest.raises(SignatureError, match="signature does not verify") as caught:
        verify(forged.to_bytes(), TrustedKeys([key.public_key]))
    assert caught.value.reason == "tampered"


@pytest.mark.parametrize("keep", [0, 3, 7, 40, 150, -1])
def test_truncated_envelopes_say_truncated(key: SigningKey, signed: bytes, keep: int) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(signed[:keep], TrustedKeys([key.public_key]))
    assert caught.value.reason == "truncated"


def test_unknown_key_is_named(key: SigningKey, signed: bytes) -> None:
    stranger = SigningKey.generate()
    with pytest.raises(SignatureError, match=key.key_id) as caught:
        verify(signed, TrustedKeys([stranger.public_key]))
    assert caught.value.reason == "unknown-key"


def test_a_key_claiming_another_id_fails(key: SigningKey) -> None:
    impostor = SigningKey.generate()
    envelope = sign(PROGRAM, impostor)
    relabelled = SignedProgram(envelope.program, envelope.sha256, key.key_id, envelope.signature)
    with pytest.raises(SignatureError) as caught:
        verify(relabelled, TrustedKeys([key.public_key]))
    assert caught.value.reason == "tampered"


@pytest.mark.parametrize(
    "data",
    [b"SFPG" + bytes(200), b"hello world, not signed at all"],
)
def test_other_bytes_are_malformed(key: SigningKey, data: bytes) -> None:
    with pytest.raises(SignatureError, match="not a signed spikefleet program") as caught:
        verify(data, TrustedKeys([key.public_key]))
    assert caught.value.reason == "malformed"


def test_trailing_bytes_are_malformed(key: SigningKey, signed: bytes) -> None:
    with pytest.raises(SignatureError, match="unexpected bytes") as caught:
        verify(signed + b"x", TrustedKeys([key.public_key]))
    assert caught.value.reason == "malformed"


def test_key_files_round_trip_with_private_mode(tmp_path: Path, key: SigningKey) -> None:
    key.save(tmp_path / "k")
    key.public_key.save(tmp_path / "k.pub")
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert SigningKey.load(tmp_path / "k").key_id == key.key_id
    assert PublicKey.load(tmp_path / "k.pub") == key.public_key
    assert PublicKey.from_bytes(key.public_key.to_bytes()) == key.public_key


def test_trusted_keys_load_from_files_and_directories(tmp_path: Path) -> None:
    keys = [SigningKey.generate() for _ in range(3)]
    for index, key in enumerate(keys):
        key.public_key.save(tmp_path / f"key{index}.pub")
    (tmp_path / "notes.txt").write_text("not a key")
    from_dir = TrustedKeys.load(tmp_path)
    assert {k.key_id for k in from_dir} == {k.key_id for k in keys}
    from_file = TrustedKeys.load(tmp_path / "key1.pub")
    assert keys[1].key_id in from_file and keys[0].key_id not in from_file


def test_bad_key_files_raise_key_file_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.pub").write_text(
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    )
    with pytest.raises(KeyFileError, match=r"junk\.pub"):
        TrustedKeys.load(tmp_path)
    with pytest.raises(KeyFileError, match="cannot read key file"):
        SigningKey.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyFileError, match=r"no \.pub files"):
        TrustedKeys.load(tmp_path / "empty")


def test_an_endorsement_verifies_only_with_its_endorser_and_survives_its_file(
    tmp_path: Path,
) -> None:
    old, new, stranger = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    endorsement = old.endorse(new.public_key)
    assert endorsement.verify(old.public_key)
    assert not endorsement.verify(stranger.public_key)
    loaded = Endorsement.load(endorsement.save(tmp_path))
    assert loaded.key == new.public_key and loaded.verify(old.public_key)
    assert load_endorsements(tmp_path) == {new.key_id: loaded}


def test_a_program_signature_cannot_pass_as_an_endorsement() -> None:
    """Different domain tags: signing the new key's raw bytes as a 'program' proves nothing."""
    old, new = SigningKey.generate(), SigningKey.generate()
    program_style = old.sign_digest(new.public_key.to_bytes())
    assert not old.public_key.verify_endorsement(new.public_key, program_style)


def test_a_garbled_endorsement_file_names_the_format(tmp_path: Path) -> None:
    path = tmp_path / "k.endorsement"
    path.write_text('{"endorser": "x"}')
    with pytest.raises(KeyFileError, match="not an endorsement file"):
        Endorsement.load(path)
