"""spikefleet-agent's command line: help, machine-readable output, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from spikefleet_agent.cli import main


@pytest.fixture(autouse=True)
def _keep_logging_config() -> Iterator[None]:
    """main() configures structlog for the process; give other tests theirs back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["run"], ["inventory"], ["check-config"], []):
        with pytest.raises(SystemExit) as info:
            main([*command, "--help"])
        assert info.value.code == 0
        assert "usage: spikefleet-agent" in capsys.readouterr().out


def test_inventory_json_is_clean_json_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = tmp_path / "0000:01:00.0"
    device.mkdir()
    (device / "vendor").write_text("0x1e7c\n")
    (device / "device").write_text("0xbca1\n")
    assert main(["inventory", "--json", "--sysfs-pci", str(tmp_path)]) == 0
    (found,) = json.loads(capsys.readouterr().out)
    assert (found["kind"], found["address"]) == ("akida-pcie", "0000:01:00.0")


def test_a_bad_config_is_one_line_on_stderr_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('backend = "gpu"\ntrusted_keys = ["k"]\n')
    assert main(["check-config", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "choose one of sim, akida-sw, akida-hw" in err


def test_version_names_the_agent(capsys: pytest.CaptureFixture[str]) -> None:
    from spikefleet_agent import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"spikefleet-agent {__version__}"


def test_check_config_says_how_each_channel_is_protected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from support.agent import make_key

    make_key(tmp_path / "keys")
    (tmp_path / "t").write_text("token")
    config = tmp_path / "agent.toml"
    base = 'trusted_keys = ["keys"]\n'
    config.write_text(
        base + '[server]\naddress = ["fleet.example:7443", "127.0.0.1:7443"]\n'
        '[inference]\naddress = "0.0.0.0:50061"\ntoken_file = "t"\nplaintext = true\n'
    )
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "server fleet.example:7443: TLS, system roots" in out
    assert "server 127.0.0.1:7443: plaintext (loopback)" in out
    assert "inference API 0.0.0.0:50061: plaintext, token" in out

    config.write_text(base + '[server]\naddress = "fleet.example:7443"\ntls_ca = "none.pem"\n')
    assert main(["check-config", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "tls_ca" in err and "does not exist" in err
