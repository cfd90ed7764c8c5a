"""health_listen: the gRPC health service alone, in plaintext, for probes that can't do TLS
(Kubernetes' grpc probe); nothing else is reachable on that port."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.server import running_server

from spikefleet.errors import ServerConfigError
from spikefleet.v1 import registry_pb2, registry_pb2_grpc
from spikefleet_server.config import load_config


def test_the_health_port_answers_serving_and_serves_nothing_else(tmp_path: Path) -> None:
    with (
        running_server(tmp_path / "data", health_listen="127.0.0.1:0") as app,
        grpc.insecure_channel(f"127.0.0.1:{app.health_port}") as channel,
    ):
        assert app.health_port and app.health_port != app.port
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as refused:
            registry_pb2_grpc.RegistryServiceStub(channel).TrustedKeys(
                registry_pb2.TrustedKeysRequest(), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_health_address_without_a_port_is_refused() -> None:
    with pytest.raises(ServerConfigError, match="not host:port"):
        load_config(
            None,
            environ={},
            overrides={"insecure_loopback": True, "health_listen": "0.0.0.0"},
        )
