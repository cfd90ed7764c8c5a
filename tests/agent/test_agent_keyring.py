"""Key rotation on the agent: it learns a key only with an endorsement by a key it trusts,
retires learned keys the server stops announcing, and never lets a server un-pin a key."""

from __future__ import annotations

from pathlib import Path

from spikefleet.program.signing import Endorsement, SigningKey, TrustedKeys
from spikefleet_agent.programs.keyring import Announced, KeyRing


def announce(key: SigningKey, by: SigningKey | None = None) -> Announced:
    return Announced(key.public_key, by.endorse(key.public_key) if by else None)


def ring(pinned: SigningKey, directory: Path) -> KeyRing:
    return KeyRing(TrustedKeys([pinned.public_key]), directory)


def test_an_endorsed_key_is_learned_and_trusted(tmp_path: Path) -> None:
    k0, k1 = SigningKey.generate(), SigningKey.generate()
    keys = ring(k0, tmp_path)
    changes = keys.follow([announce(k0), announce(k1, by=k0)])
    assert changes.learned == [k1.key_id] and not changes.refused
    assert k1.key_id in keys.trusted and k0.key_id in keys.trusted


def test_a_chain_of_endorsements_is_followed_in_one_announcement(tmp_path: Path) -> None:
    k0, k1, k2 = (SigningKey.generate() for _ in range(3))
    keys = ring(k0, tmp_path)
    changes = keys.follow([announce(k2, by=k1), announce(k1, by=k0)])
    assert sorted(changes.learned) == sorted([k1.key_id, k2.key_id])


def test_keys_without_a_trusted_endorsement_are_refused_with_the_reason(tmp_path: Path) -> None:
    k0, k1, stranger = (SigningKey.generate() for _ in range(3))
    keys = ring(k0, tmp_path)
    forged = Announced(k1.public_key, Endorsement(k1.public_key, k0.key_id, b"\0" * 64))
    changes = keys.follow([announce(stranger), announce(SigningKey.generate(), by=stranger)])
    assert not changes.learned and len(changes.refused) == 2
    assert "no endorsement" in changes.refused[stranger.key_id]
    assert any("does not trust" in why for why in changes.refused.values())
    assert "does not verify" in keys.follow([forged]).refused[k1.key_id]
    assert list(keys.trusted) == [k0.public_key]


def test_a_learned_key_the_server_stops_announcing_is_retired(tmp_path: Path) -> None:
    k0, k1, k2 = (SigningKey.generate() for _ in range(3))
    keys = ring(k0, tmp_path)
    keys.follow([announce(k1, by=k0)])
    changes = keys.follow([announce(k2, by=k1)])  # k1 endorses its successor, then goes
    assert changes.learned == [k2.key_id] and changes.retired == [k1.key_id]
    assert k1.key_id not in keys.trusted and k2.key_id in keys.trusted
    assert k0.key_id in keys.trusted  # pinned: only the config changes that
    assert not keys.follow([]).retired  # no answer is not a retirement


def test_learned_keys_are_kept_across_restarts_and_rechecked(tmp_path: Path) -> None:
    k0, k1, stranger = (SigningKey.generate() for _ in range(3))
    ring(k0, tmp_path).follow([announce(k1, by=k0)])
    stranger.endorse(SigningKey.generate().public_key).save(tmp_path)  # dropped in by hand
    again = ring(k0, tmp_path)
    assert again.learned == [k1.key_id]
    assert sorted(k.key_id for k in again.trusted) == sorted([k0.key_id, k1.key_id])
