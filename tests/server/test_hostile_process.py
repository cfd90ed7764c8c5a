"""The real ``spikefleet-server`` process against garbage bytes, impostors and floods."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_process import ServerProcess, serve
from support.raw_agent import RawAgent
from support.server import TOKENS

from spikefleet.v1 import (
    converter_pb2,
    fleet_pb2,
    registry_pb2,
    rollout_pb2,
)
from spikefleet_server.config import hash_token

pytestmark = pytest.mark.slow

SPIKEFLEET = str(Path(sys.executable).parent / "spikefleet")
GARBAGE = b"\xff\xff\xff\xff\x0f"  # a field tag no protobuf parser accepts


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hostile")
    config = root / "server.toml"
    tokens = "".join(
        f'[[tokens]]\nname = "{role}"\nrole = "{role}"\nsha256 = "{hash_token(token)}"\n'
        for role, token in TOKENS.items()
    )
    config.write_text(f"drain_seconds = 5\nworkers = 1\n{tokens}")
    with serve(config, root / "data") as process:
        yield process


def methods() -> list[tuple[str, str, bool, bool]]:
    """(role to call with, full method, request streaming, response streaming) of every
    method the server serves."""
    found = []
    for module in (converter_pb2, fleet_pb2, registry_pb2, rollout_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                role = "agent" if service.name == "Fleet" else "admin"
                found.append(
                    (
                        role,
                        f"/{service.full_name}/{method.name}",
                        method.client_streaming,
                        method.server_streaming,
                    )
                )
    return found


@pytest.mark.parametrize(("role", "method", "streams_in", "streams_out"), methods())
def test_bytes_that_are_no_protobuf_answer_invalid_argument_on_every_method(
    server: ServerProcess, role: str, method: str, streams_in: bool, streams_out: bool
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        kind = {
            (False, False): channel.unary_unary,
            (False, True): channel.unary_stream,
            (True, False): channel.stream_unary,
            (True, True): channel.stream_stream,
        }[(streams_in, streams_out)]
        call = kind(method)
        request = iter([GARBAGE]) if streams_in else GARBAGE
        metadata = (("authorization", f"Bearer {TOKENS[role]}"),)
        with pytest.raises(grpc.RpcError) as raised:
            reply = call(request, metadata=metadata, timeout=30)
            if streams_out:
                list(reply)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert "is not a valid spikefleet.v1." in (raised.value.details() or "")


def cli(server: ServerProcess, role: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SPIKEFLEET, "--server", f"127.0.0.1:{server.port}", "--token", TOKENS[role], *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def listed(server: ServerProcess) -> list[str]:
    result = cli(server, "viewer", "agents", "--json")
    assert result.returncode == 0, result.stderr
    return [a["agent_id"] for a in json.loads(result.stdout)]


def test_an_impostors_records_can_be_deleted_with_the_cli(server: ServerProcess) -> None:
    address = f"127.0.0.1:{server.port}"
    with RawAgent(address, "ghost-1", token=TOKENS["agent"]) as ghost:
        ghost.registered()
        ghost.telemetry(seq=2**63 - 1, frames=1)
        ghost.wait_acks(1)
        assert "ghost-1" in listed(server)

        refused = cli(server, "admin", "agents", "delete", "ghost-1")
        assert refused.returncode != 0
        assert "--force" in refused.stderr and "Traceback" not in refused.stderr

        viewer = cli(server, "viewer", "agents", "delete", "--force", "ghost-1")
        assert viewer.returncode != 0 and "admin" in viewer.stderr

        forced = cli(server, "admin", "agents", "delete", "--force", "--json", "ghost-1")
        assert forced.returncode == 0, forced.stderr
        assert json.loads(forced.stdout) == [
            {"agent_id": "ghost-1", "was_connected": True, "telemetry_batches": 1, "installs": 0}
        ]
        ghost.ended.wait(30)
        assert ghost.error is not None and ghost.error.code() == grpc.StatusCode.UNAVAILABLE
    assert "ghost-1" not in listed(server)

    missing = cli(server, "admin", "agents", "delete", "ghost-1")
    assert missing.returncode != 0 and "no agent 'ghost-1'" in missing.stderr


def test_telemetry_fields_beyond_sqlite_are_refused_and_the_server_keeps_serving(
    server: ServerProcess,
) -> None:
    address = f"127.0.0.1:{server.port}"
    with RawAgent(address, "mallory", token=TOKENS["agent"]) as mallory:
        mallory.registered()
        mallory.telemetry(seq=1, frames=2**63)
        mallory.telemetry(seq=2**64 - 1)
        mallory.telemetry(seq=2, frames=3)
        acks = mallory.wait_acks(3)
    assert "frames" in acks[0].refused and "seq" in acks[1].refused
    assert not acks[2].refused
    assert "mallory" in listed(server)
