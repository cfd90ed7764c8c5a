"""The spikefleet-server command line: help everywhere, tokens, config checks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from spikefleet_server.cli import main
from spikefleet_server.config import hash_token

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [[], ["serve"], ["check-config"], ["token", "create"]])
def test_every_command_has_help(command: list[str], capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert "usage: spikefleet-server" in capsys.readouterr().out


def test_token_create_prints_the_token_and_its_config_entry(capsys):
    assert main(["token", "create", "--name", "ci", "--role", "deployer"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert len(token) >= 40
    assert 'name = "ci"' in err and 'role = "deployer"' in err
    assert re.search(r'sha256 = "([0-9a-f]{64})"', err).group(1) == hash_token(token)  # type: ignore[union-attr]


def test_an_agent_token_can_be_bound_to_its_agents_and_the_entry_loads(tmp_path: Path, capsys):
    argv = ["token", "create", "--name", "rack", "--role", "agent", "--agent", "rack-*"]
    assert main([*argv, "--agent", "spare"]) == 0
    err = capsys.readouterr().err
    assert 'agents = ["rack-*", "spare"]' in err
    config = tmp_path / "server.toml"
    config.write_text(f'insecure_loopback = true\ndata_dir = "{tmp_path}"\n' + err)
    assert main(["check-config", "--config", str(config)]) == 0
    assert main(["token", "create", "--name", "ops", "--role", "admin", "--agent", "x"]) == 2
    assert "--agent applies to role agent only" in capsys.readouterr().err


def test_the_shipped_example_config_is_checked_and_its_missing_tls_files_named(capsys):
    assert main(["check-config", "--config", str(ROOT / "deploy/server/server.toml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "TLS file /etc/spikefleet/tls/server.pem does not exist" in err[0]


def test_check_config_summarises_a_good_config(tmp_path: Path, capsys):
    config = tmp_path / "server.toml"
    config.write_text(
        f'listen = "127.0.0.1:7443"\ninsecure_loopback = true\ndata_dir = "{tmp_path}"\n'
    )
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "config ok: listen 127.0.0.1:7443 (plaintext (loopback))" in out
    assert "created on first start" in out


def test_serve_refuses_plaintext_off_loopback_in_one_line(tmp_path: Path):
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "spikefleet-server"),
            "serve",
            "--data-dir",
            str(tmp_path),
            "--listen",
            "0.0.0.0:0",
            "--insecure-loopback",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "spikefleet-server serve: error: --insecure-loopback needs a loopback listen address, "
        "not '0.0.0.0:0': configure tls.cert and tls.key to listen there"
    ]


def test_check_config_takes_the_flags_serve_takes(tmp_path: Path, capsys):
    """The quickstart's own config names no listen address nor plaintext: serve's flags do."""
    config = tmp_path / "server.toml"
    config.write_text('[[tokens]]\nname = "me"\nrole = "admin"\nsha256 = "' + "0" * 64 + '"\n')
    argv = ["--config", str(config), "--insecure-loopback", "--listen", "127.0.0.1:7443"]
    argv += ["--data-dir", str(tmp_path / "srv")]
    assert main(["check-config", *argv]) == 0
    out = capsys.readouterr().out
    assert "listen 127.0.0.1:7443 (plaintext (loopback))" in out and "1 token(s)" in out


def test_serving_freezes_what_start_made_and_collects_young_objects_less_often():
    import gc

    from spikefleet_server.cli import GC_THRESHOLDS, _tune_gc

    before = gc.get_threshold()
    try:
        _tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0  # out of the collector's passes from now on
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # a cycle made after start is still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
