"""Configuration: TOML, then environment, then flags; unsafe set-ups are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikefleet.errors import ServerConfigError
from spikefleet_server.auth import Role
from spikefleet_server.config import hash_token, load_config

TOML = """
listen = "127.0.0.1:7000"
data_dir = "{data}"
insecure_loopback = true
max_upload_bytes = 1000
workers = 2

[[tokens]]
name = "ci"
role = "deployer"
sha256 = "{digest}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def test_file_then_environment_then_flags(tmp_path: Path):
    path = write(tmp_path, TOML.format(data=tmp_path, digest=hash_token("t")))
    config = load_config(path, environ={})
    assert config.listen == "127.0.0.1:7000" and config.max_upload_bytes == 1000
    assert config.data_dir == tmp_path and config.workers == 2
    assert [(t.name, t.role) for t in config.tokens] == [("ci", Role.DEPLOYER)]
    assert config.signing_key_path == tmp_path / "keys" / "signing.key"

    env = {"SPIKEFLEET_SERVER_MAX_UPLOAD_BYTES": "5000", "SPIKEFLEET_SERVER_WORKERS": "3"}
    config = load_config(path, environ=env, overrides={"workers": 4, "listen": None})
    assert (config.max_upload_bytes, config.workers, config.listen) == (5000, 4, "127.0.0.1:7000")


def test_plaintext_only_on_loopback_and_only_when_asked(tmp_path: Path):
    with pytest.raises(ServerConfigError, match=r"no TLS certificate.*--insecure-loopback"):
        load_config(None, environ={}, overrides={"data_dir": tmp_path})
    with pytest.raises(ServerConfigError, match="loopback listen address"):
        load_config(
            None,
            environ={"SPIKEFLEET_SERVER_LISTEN": "0.0.0.0:7443"},
            overrides={"data_dir": tmp_path, "insecure_loopback": True},
        )
    config = load_config(
        None, environ={}, overrides={"listen": "[::1]:7443", "insecure_loopback": True}
    )
    assert config.insecure_loopback


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen = 'nope'\ninsecure_loopback = true", "not host:port"),
        ("colour = 'blue'", "unknown setting 'colour'"),
        ("workers = 'many'", "workers.*not a valid int"),
        ("[[tokens]]\nname = 'x'\nrole = 'root'\nsha256 = '" + "0" * 64 + "'", "unknown role"),
        ("[[tokens]]\nname = 'x'\nrole = 'viewer'\nsha256 = 'secret'", "64 lowercase hex"),
        (
            "[[tokens]]\nname = 'x'\nrole = 'admin'\nagents = ['e1']\nsha256 = '" + "0" * 64 + "'",
            "agents only applies to role agent",
        ),
        (
            "[[tokens]]\nname = 'x'\nrole = 'agent'\nagents = 'e1'\nsha256 = '" + "0" * 64 + "'",
            "agents must be a list",
        ),
        ("[tls]\ncert = '/nonexistent.pem'\nkey = '/nonexistent.key'", "does not exist"),
        ("listen = ", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path: Path, text: str, message: str):
    with pytest.raises(ServerConfigError, match=message):
        load_config(write(tmp_path, text), environ={})


def test_an_agent_token_can_name_the_agents_it_registers_as(tmp_path: Path):
    text = "insecure_loopback = true\n[[tokens]]\nname = 'e'\nrole = 'agent'\n"
    text += "agents = ['edge-0*']\nsha256 = '%s'"
    config = load_config(write(tmp_path, text % ("0" * 64)), environ={})
    assert config.tokens[0].agents == ("edge-0*",)


def test_tokens_cannot_come_from_the_environment(tmp_path: Path):
    with pytest.raises(ServerConfigError, match="only be set in the config file"):
        load_config(None, environ={"SPIKEFLEET_SERVER_TOKENS": "x"})


def test_a_missing_config_file_is_named(tmp_path: Path):
    with pytest.raises(ServerConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", environ={})


def test_nested_and_list_settings_from_the_environment(tmp_path: Path):
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_text("cert")
    key.write_text("key")
    env = {
        "SPIKEFLEET_SERVER_TLS_CERT": str(cert),
        "SPIKEFLEET_SERVER_TLS_KEY": str(key),
        "SPIKEFLEET_SERVER_LISTEN": "0.0.0.0:7443",
        "SPIKEFLEET_SERVER_EXTENSIONS": "spikefleet_server.fleet, ",
        "SPIKEFLEET_SERVER_INSECURE_LOOPBACK": "false",
    }
    config = load_config(None, environ=env)
    assert (config.tls.cert, config.tls.key, config.tls.client_ca) == (cert, key, None)
    assert config.listen == "0.0.0.0:7443"
    assert config.extensions == ("spikefleet_server.fleet",)


def test_telemetry_limits_load_from_file_and_environment_and_refuse_nonsense(tmp_path: Path):
    text = TOML.format(data=tmp_path, digest=hash_token("t"))
    path = write(tmp_path, text)
    path.write_text(
        "telemetry_max_batch_bytes = 4096\ntelemetry_retention_days = 7.5\n" + path.read_text()
    )
    env = {"SPIKEFLEET_SERVER_TELEMETRY_MAX_BATCHES_PER_AGENT": "10"}
    config = load_config(path, environ=env)
    assert config.telemetry_max_batch_bytes == 4096
    assert config.telemetry_retention_days == 7.5
    assert config.telemetry_max_batches_per_agent == 10
    assert config.telemetry_rate_bytes_per_s == 65536
    with pytest.raises(ServerConfigError, match="telemetry_retention_days must be >= 0"):
        load_config(path, environ={"SPIKEFLEET_SERVER_TELEMETRY_RETENTION_DAYS": "-1"})
    with pytest.raises(ServerConfigError, match="telemetry_rate_bytes_per_s below 1024"):
        load_config(path, environ={"SPIKEFLEET_SERVER_TELEMETRY_RATE_BYTES_PER_S": "10"})


def test_the_database_url_comes_from_the_file_the_environment_or_the_flag(tmp_path: Path) -> None:
    from spikefleet_server.config import DATABASE_ENV

    base = {"insecure_loopback": True, "data_dir": tmp_path}
    assert load_config(None, environ={}, overrides=base).database_target == (
        tmp_path / "spikefleet.db"
    )
    path = tmp_path / "server.toml"
    path.write_text('insecure_loopback = true\n[database]\nurl = "postgresql://a@db/one"\n')
    assert load_config(path, environ={}).database.url == "postgresql://a@db/one"
    from_env = load_config(path, environ={DATABASE_ENV: "postgresql://a@db/two"})
    assert from_env.database_target == "postgresql://a@db/two" and from_env.replicated
    flagged = load_config(
        path,
        environ={DATABASE_ENV: "postgresql://a@db/two"},
        overrides={"database": {"url": "postgresql://a@db/three"}},
    )
    assert flagged.database.url == "postgresql://a@db/three"


def test_a_database_that_is_not_a_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ServerConfigError, match="sqlite:///PATH or postgresql://") as refused:
        load_config(
            None,
            environ={},
            overrides={"insecure_loopback": True, "database": {"url": "mysql://u:secret@h/db"}},
        )
    assert "secret" not in str(refused.value)


def test_every_server_skips_bandwidth_probes_and_gives_uploads_a_fixed_window(tmp_path: Path):
    path = write(tmp_path, TOML.format(data=tmp_path, digest=hash_token("t")))
    plain = dict(load_config(path, environ={}).grpc_options())
    # a fleet's small messages would each cost a PING round; uploads keep a big window;
    # a reconnect storm's new calls wait for the loop instead of being reset past 1,000
    assert plain == {
        "grpc.http2.bdp_probe": 0,
        "grpc.http2.lookahead_bytes": 4 * 1024 * 1024,
        "grpc.server.max_pending_requests": 10_000,
        "grpc.server.max_pending_requests_hard_limit": 20_000,
        "grpc.so_reuseport": 1,  # the default listeners share the port
    }
    aged = load_config(path, environ={"SPIKEFLEET_SERVER_MAX_CONNECTION_AGE_SECONDS": "600"})
    options = dict(aged.grpc_options())
    assert options["grpc.http2.bdp_probe"] == 0
    assert options["grpc.max_connection_age_ms"] == 600_000
    assert options["grpc.max_connection_age_grace_ms"] == 60_000
