"""``spikefleet --server ADDR --token T programs ...`` against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.server import TOKENS

from spikefleet.cli.main import main
from spikefleet_server.app import ServerApp


def cli_lines(stderr: str) -> list[str]:
    """stderr without the in-process server's JSON log lines."""
    return [line for line in stderr.splitlines() if line and not line.startswith("{")]


def run(server: ServerApp, role: str, *args: str) -> int:
    return main(["--server", f"127.0.0.1:{server.port}", "--token", TOKENS[role], *args])


def test_list_describe_get_delete(server: ServerApp, tmp_path: Path, capsys):
    record = server.registry.put(b"cli program", name="cli", labels={"k": "v"}, fidelity={"f": 1})
    capsys.readouterr()

    assert run(server, "viewer", "programs", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["name"], p["version"], p["sha256"]) for p in listed] == [("cli", 1, record.sha256)]

    assert run(server, "viewer", "programs", "list", "--label", "k=v") == 0
    table = capsys.readouterr().out
    assert "cli" in table and record.sha256[:12] in table

    assert run(server, "viewer", "programs", "describe", "cli", "--json") == 0
    described = json.loads(capsys.readouterr().out)
    assert described["fidelity"] == {"f": 1} and described["key_id"] == server.signing_key.key_id

    out = tmp_path / "cli.sfp"
    assert run(server, "viewer", "programs", "get", record.sha256[:12], "-o", str(out)) == 0
    assert out.read_bytes() == server.registry.get_bytes(record.sha256)

    assert run(server, "admin", "programs", "delete", "cli", "--version", "1") == 0
    assert "deleted cli v1" in capsys.readouterr().out
    assert server.registry.list(name="cli") == []


def test_failures_are_one_line_and_exit_1(server: ServerApp, capsys):
    assert run(server, "viewer", "programs", "describe", "absent") == 1
    err = cli_lines(capsys.readouterr().err)
    assert len(err) == 1 and "no program 'absent'" in err[0]
    assert main(["--server", f"127.0.0.1:{server.port}", "programs", "list"]) == 1
    assert "missing bearer token" in capsys.readouterr().err


def test_without_a_server_the_command_says_how_to_give_one(capsys, monkeypatch):
    monkeypatch.delenv("SPIKEFLEET_SERVER", raising=False)
    assert main(["programs", "list"]) == 1
    assert "pass --server HOST:PORT" in capsys.readouterr().err


def test_every_programs_command_has_help(capsys):
    for action in ("list", "describe", "get", "keys", "delete"):
        with pytest.raises(SystemExit) as done:
            main(["programs", action, "--help"])
        assert done.value.code == 0
        assert "usage: spikefleet programs" in capsys.readouterr().out


def test_keys_writes_the_public_keys_agents_trust(server: ServerApp, tmp_path: Path, capsys):
    from spikefleet.program.signing import TrustedKeys, verify

    record = server.registry.put(b"keyed program", name="keyed")
    trusted_dir = tmp_path / "trusted"
    assert run(server, "viewer", "programs", "keys", "-o", str(trusted_dir)) == 0
    assert server.signing_key.key_id in capsys.readouterr().out
    trusted = TrustedKeys.load(trusted_dir)
    assert verify(server.registry.get_bytes(record.sha256), trusted) == b"keyed program"
    assert run(server, "agent", "programs", "keys", "--json") == 0
    assert list(json.loads(capsys.readouterr().out)) == [server.signing_key.key_id]
