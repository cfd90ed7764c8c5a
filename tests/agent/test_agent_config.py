"""The agent config: defaults that are safe, errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikefleet.errors import AgentConfigError
from spikefleet_agent.config import check_files, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "agent" / "agent.toml"


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    config = parse_config(
        {"agent_id": "edge-1", "state_dir": "state", "trusted_keys": ["keys"]}, tmp_path
    )
    assert config.state_dir == tmp_path / "state"
    assert config.trusted_keys == [tmp_path / "keys"]
    assert config.backend == "sim"
    assert config.inference.address == "127.0.0.1:50061"


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(AgentConfigError, match="choose one of sim, akida-sw, akida-hw"):
        parse_config({"backend": "gpu", "trusted_keys": ["k"]})


def test_trusted_keys_are_required() -> None:
    with pytest.raises(AgentConfigError, match="trusted_keys is empty"):
        parse_config({})


def test_exposed_inference_api_needs_a_token_and_tls_or_an_explicit_plaintext() -> None:
    with pytest.raises(AgentConfigError, match="token_file"):
        parse_config({"trusted_keys": ["k"], "inference": {"address": "0.0.0.0:50061"}})
    with pytest.raises(AgentConfigError, match=r"tls_cert and tls_key \(its token would travel"):
        parse_config(
            {"trusted_keys": ["k"], "inference": {"address": "0.0.0.0:1", "token_file": "t"}}
        )
    inference = {"address": "0.0.0.0:1", "token_file": "t", "plaintext": True}
    parse_config({"trusted_keys": ["k"], "inference": inference})


def test_tls_settings_are_checked_and_resolved_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("ca")
    (tmp_path / "edge.pem").write_text("cert")
    (tmp_path / "edge.key").write_text("key")
    server = {"address": "fleet.example:7443", "tls_ca": "ca.pem"}
    config = parse_config(
        {
            "trusted_keys": ["k"],
            "server": {**server, "tls_cert": "edge.pem", "tls_key": "edge.key"},
        },
        tmp_path,
    )
    tls = config.server.tls()
    assert not isinstance(tls, bool) and tls is not None
    assert (tls.ca, tls.cert, tls.key) == (
        tmp_path / "ca.pem",
        tmp_path / "edge.pem",
        tmp_path / "edge.key",
    )
    with pytest.raises(AgentConfigError, match="tls_cert and tls_key go together"):
        parse_config(
            {"trusted_keys": ["k"], "server": {**server, "tls_cert": "edge.pem"}}, tmp_path
        )
    with pytest.raises(AgentConfigError, match=r"tls_ca .*missing\.pem does not exist"):
        check_files(
            parse_config({"trusted_keys": ["k"], "server": {"tls_ca": "missing.pem"}}, tmp_path)
        )
    plain = parse_config(
        {"trusted_keys": ["k"], "server": {"address": "fleet.example:7443", "plaintext": True}}
    )
    assert plain.server.tls() is False
    default = parse_config({"trusted_keys": ["k"], "server": {"address": "fleet.example:7443"}})
    assert default.server.tls() is None  # the rule: TLS, as the address is not loopback


def test_typos_are_reported_with_the_known_keys() -> None:
    with pytest.raises(AgentConfigError, match=r"unknown key\(s\) adress in \[server\]"):
        parse_config({"trusted_keys": ["k"], "server": {"adress": "x:1"}})


def test_missing_file_says_where_the_example_is(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match=r"deploy/agent/agent\.toml"):
        load_config(tmp_path / "nope.toml")


def test_the_shipped_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.backend == "sim"
    assert config.server.address


def test_server_address_may_list_several_replicas() -> None:
    one = parse_config({"trusted_keys": ["k"], "server": {"address": "a.example:7443"}})
    assert one.server.addresses == ["a.example:7443"]
    several = parse_config(
        {"trusted_keys": ["k"], "server": {"address": ["a.example:7443", "b.example:7443"]}}
    )
    assert several.server.addresses == ["a.example:7443", "b.example:7443"]
    assert parse_config({"trusted_keys": ["k"]}).server.addresses == []


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ([], "non-empty list"),
        (["a:1", ""], "non-empty list"),
        (7443, "non-empty list"),
        (["a:1", "a:1"], "twice"),
    ],
)
def test_a_bad_server_address_list_is_refused_with_the_form_to_use(
    address: object, problem: str
) -> None:
    with pytest.raises(AgentConfigError, match=problem) as refused:
        parse_config({"trusted_keys": ["k"], "server": {"address": address}})
    assert "[server] address" in str(refused.value)
