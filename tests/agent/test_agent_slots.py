"""A/B slots: only verified programs run, a crash at any point leaves one that does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.agent import make_key, make_program, signed_program, tamper

from spikefleet.errors import InstallError
from spikefleet.program.signing import SigningKey, TrustedKeys
from spikefleet_agent.programs.slots import PROGRAM_FILE, SlotStore, verify_signed


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return make_key(tmp_path / "keys")


@pytest.fixture
def store(tmp_path: Path, key: SigningKey) -> SlotStore:
    return SlotStore(tmp_path / "programs", TrustedKeys.load(tmp_path / "keys"))


def install(store: SlotStore, data: bytes, sha: str) -> str:
    slot = store.inactive_slot()
    store.write(slot, data)
    store.activate(slot, sha)
    return slot


def test_empty_store_has_no_program(store: SlotStore) -> None:
    assert store.load_active() is None


def test_installs_alternate_slots_and_keep_the_previous_program(
    store: SlotStore, key: SigningKey
) -> None:
    sha1, data1 = signed_program(make_program(1), key)
    sha2, data2 = signed_program(make_program(2), key)
    assert install(store, data1, sha1) == "a"
    assert install(store, data2, sha2) == "b"
    state = store.state()
    assert state is not None
    assert (state.slot, state.sha256, state.previous_slot, state.previous_sha256) == (
        "b",
        sha2,
        "a",
        sha1,
    )
    loaded = store.load_active()
    assert loaded is not None and loaded.sha256 == sha2 and loaded.program.name == "agent-test"
    assert store.previous().sha256 == sha1


def test_tampered_program_is_refused_with_its_reason(store: SlotStore, key: SigningKey) -> None:
    sha, data = signed_program(make_program(1), key)
    with pytest.raises(InstallError) as info:
        verify_signed(tamper(data), store.trusted, sha)
    assert info.value.reason == "tampered"


def test_program_signed_by_an_unpinned_key_is_refused(store: SlotStore, tmp_path: Path) -> None:
    sha, data = signed_program(make_program(1), make_key(tmp_path / "other"))
    with pytest.raises(InstallError) as info:
        verify_signed(data, store.trusted, sha)
    assert info.value.reason == "unknown-key"


def test_a_program_with_another_sha_than_assigned_is_refused(
    store: SlotStore, key: SigningKey
) -> None:
    _, data = signed_program(make_program(1), key)
    with pytest.raises(InstallError) as info:
        verify_signed(data, store.trusted, "00" * 32)
    assert info.value.reason == "sha256"


def test_an_active_slot_damaged_on_disk_is_never_loaded(store: SlotStore, key: SigningKey) -> None:
    sha1, data1 = signed_program(make_program(1), key)
    sha2, data2 = signed_program(make_program(2), key)
    install(store, data1, sha1)
    slot = install(store, data2, sha2)
    (store.root / slot / PROGRAM_FILE).write_bytes(tamper(data2))
    loaded = store.load_active()
    assert loaded is not None and loaded.sha256 == sha1
    state = store.state()
    assert state is not None and state.sha256 == sha1  # the pointer now names the good slot


def test_crash_while_writing_the_new_slot_keeps_the_active_program(
    store: SlotStore, key: SigningKey
) -> None:
    sha1, data1 = signed_program(make_program(1), key)
    _sha2, data2 = signed_program(make_program(2), key)
    install(store, data1, sha1)
    # killed halfway through writing slot b: only a partial temp file exists
    (store.root / "b" / (PROGRAM_FILE + ".tmp")).write_bytes(data2[: len(data2) // 2])
    loaded = store.load_active()
    assert loaded is not None and loaded.sha256 == sha1


def test_crash_after_the_slot_but_before_the_pointer_keeps_the_active_program(
    store: SlotStore, key: SigningKey
) -> None:
    sha1, data1 = signed_program(make_program(1), key)
    _sha2, data2 = signed_program(make_program(2), key)
    install(store, data1, sha1)
    store.write("b", data2)
    (store.root / "active.json.tmp").write_text('{"slot": "b", "sha')  # torn pointer write
    loaded = store.load_active()
    assert loaded is not None and loaded.sha256 == sha1


def test_unreadable_pointer_falls_back_to_a_slot_that_verifies(
    store: SlotStore, key: SigningKey
) -> None:
    sha1, data1 = signed_program(make_program(1), key)
    install(store, data1, sha1)
    (store.root / "active.json").write_text("not json")
    loaded = store.load_active()
    assert loaded is not None and loaded.sha256 == sha1
    assert json.loads((store.root / "active.json").read_text())["sha256"] == sha1


def test_rollback_needs_a_previous_program(store: SlotStore, key: SigningKey) -> None:
    sha1, data1 = signed_program(make_program(1), key)
    install(store, data1, sha1)
    with pytest.raises(InstallError, match="no previous program"):
        store.previous()
