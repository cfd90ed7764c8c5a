"""Program files: plain or signed, loaded with the checks the caller asked for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.program_factory import assert_programs_equal, reference_program

from spikefleet.errors import ProgramFormatError, SignatureError
from spikefleet.program.codec import encode
from spikefleet.program.files import load_program, load_program_bytes, save_program
from spikefleet.program.signing import SigningKey, TrustedKeys, sign


def test_plain_program_saves_and_loads(tmp_path: Path) -> None:
    program = reference_program()
    save_program(tmp_path / "p.sfp", program)
    assert_programs_equal(load_program(tmp_path / "p.sfp"), program)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_signed_program_loads_with_its_trusted_key(tmp_path: Path) -> None:
    key = SigningKey.generate()
    program = reference_program()
    save_program(tmp_path / "p.signed", sign(encode(program), key))
    loaded = load_program(tmp_path / "p.signed", TrustedKeys([key.public_key]))
    assert_programs_equal(loaded, program)


def test_signed_program_needs_trusted_keys_or_explicit_skip(tmp_path: Path) -> None:
    key = SigningKey.generate()
    data = encode(reference_program())
    save_program(tmp_path / "p.signed", sign(data, key))
    with pytest.raises(SignatureError, match="pass trusted keys"):
        load_program(tmp_path / "p.signed")
    assert load_program_bytes(tmp_path / "p.signed", verify_signature=False) == data
    load_program(tmp_path / "p.signed", verify=False)


def test_trusted_keys_refuse_a_plain_program(tmp_path: Path) -> None:
    save_program(tmp_path / "p.sfp", reference_program())
    with pytest.raises(SignatureError, match="is not signed") as caught:
        load_program(tmp_path / "p.sfp", TrustedKeys([SigningKey.generate().public_key]))
    assert caught.value.reason == "unsigned"


def test_save_replaces_existing_content_whole(tmp_path: Path) -> None:
    path = tmp_path / "p.sfp"
    path.write_bytes(b"old content that is much longer than nothing" * 1000)
    save_program(path, reference_program())
    assert_programs_equal(load_program(path), reference_program())


def test_missing_file_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(ProgramFormatError, match="cannot read program file"):
        load_program(tmp_path / "nope.sfp")
