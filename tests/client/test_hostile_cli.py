"""The CLI with a tampered registry, tokens on the command line, and secret files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.server import TOKENS

from spikefleet.cli.main import main
from spikefleet.program.signing import SignedProgram, SigningKey
from spikefleet_server.app import ServerApp

BIN = Path(sys.executable).parent


def test_programs_get_refuses_bytes_that_do_not_hash_to_the_sha256(
    server: ServerApp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = server.registry.put(b"an honest program", name="tampered")
    stored = server.registry.root / record.sha256[:2] / f"{record.sha256}.sfp"
    envelope = SignedProgram.from_bytes(stored.read_bytes())
    forged = SignedProgram(
        b"an evil program!!", envelope.sha256, envelope.key_id, envelope.signature
    )
    stored.write_bytes(forged.to_bytes())  # same size, same claimed sha256, other bytes
    capsys.readouterr()

    out = tmp_path / "saved.sfp"
    address = f"127.0.0.1:{server.port}"
    code = main(["--server", address, "--token", TOKENS["viewer"], "programs", "get",
                 record.sha256, "-o", str(out)])  # fmt: skip
    assert code == 1
    assert "tampered" in capsys.readouterr().err
    assert not out.exists()


def test_usage_errors_never_echo_the_token(tmp_path: Path) -> None:
    secret = "tok-3f9a-very-secret"
    for argv in (
        ["programs", "list", "--token", secret],
        ["programs", "list", f"--token={secret}"],
        ["--token", secret, "programs", "lisst"],
        ["--token", secret, "--bogus"],
    ):
        result = subprocess.run(
            [str(BIN / "spikefleet"), *argv], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2
        assert secret not in result.stderr + result.stdout
        assert "error" in result.stderr


def test_token_files_are_written_0600(tmp_path: Path) -> None:
    path = tmp_path / "edge.token"
    result = subprocess.run(
        [
            str(BIN / "spikefleet-server"),
            "token",
            "create",
            "--name",
            "edge",
            "--role",
            "agent",
            "-o",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the token went to the file only
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) > 30
    again = subprocess.run(
        [
            str(BIN / "spikefleet-server"),
            "token",
            "create",
            "--name",
            "edge",
            "--role",
            "agent",
            "-o",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "--force" in again.stderr


def test_a_world_readable_key_or_token_is_loaded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from spikefleet_agent.config import read_token

    key_path = tmp_path / "signing.key"
    SigningKey.generate().save(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    SigningKey.load(key_path)
    assert "readable by other users" not in caplog.text
    os.chmod(key_path, 0o644)
    SigningKey.load(key_path)
    assert f"chmod 600 {key_path}" in caplog.text

    token = tmp_path / "agent.token"
    token.write_text("abc")
    os.chmod(token, 0o644)
    caplog.clear()
    assert read_token(str(token)) == "abc"
    assert "token file" in caplog.text and "chmod 600" in caplog.text
