"""Operations: health, reflection, Prometheus metrics, JSON logs, added services."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.server import FC_ARCH, client_for, config_values, fc_model, running_server, serve_app

from spikefleet.errors import ConflictError, InvalidRequestError, ServerConfigError
from spikefleet_server import logs
from spikefleet_server.app import ServerApp
from spikefleet_server.auth import Role
from spikefleet_server.config import load_config


def test_health_is_public_and_serving(server: ServerApp):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "spikefleet.v1.ConverterService", "spikefleet.v1.RegistryService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(server: ServerApp):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))
    names = {s.name for s in reply.list_services_response.service}
    assert {"spikefleet.v1.ConverterService", "spikefleet.v1.RegistryService"} <= names


def test_metrics_count_conversions_failures_and_registry_size(tmp_path: Path):
    with running_server(tmp_path / "data", metrics_listen="127.0.0.1:0") as app:
        with client_for(app) as client:
            client.convert(fc_model(tmp_path / "ok.safetensors"), arch=FC_ARCH, name="ok")
            with pytest.raises(InvalidRequestError):
                client.convert(
                    fc_model(tmp_path / "nan.safetensors", poison=float("nan")),
                    arch=FC_ARCH,
                    name="bad",
                )
        url = f"http://127.0.0.1:{app.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        size = app.registry.stats()[1]
    assert 'spikefleet_conversions_total{outcome="ok"} 1.0' in text
    assert 'spikefleet_conversions_total{outcome="failed"} 1.0' in text
    assert 'spikefleet_conversion_failures_total{reason="conversion"} 1.0' in text
    assert "spikefleet_registry_programs 1.0" in text
    assert f"spikefleet_registry_bytes {float(size)}" in text
    assert "spikefleet_conversion_duration_seconds_count 1.0" in text
    assert 'code="OK",method="/spikefleet.v1.ConverterService/Convert"' in text


def test_logs_are_json_lines_with_the_request_context(capsys: pytest.CaptureFixture[str]):
    logs.configure("info")
    try:
        structlog.contextvars.bind_contextvars(request_id="r-1", method="/x/Y")
        structlog.get_logger("t").info("rpc.done", code="OK")
    finally:
        structlog.contextvars.clear_contextvars()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "rpc.done" and line["request_id"] == "r-1"
    assert line["method"] == "/x/Y" and line["level"] == "info" and "timestamp" in line


def test_a_service_added_to_the_app_gets_its_access_and_can_guard_deletes(tmp_path: Path):
    running = sa.Table("running", sa.MetaData(), sa.Column("sha256", sa.Text))
    config = load_config(None, environ={}, overrides=config_values(tmp_path / "data"))
    app = ServerApp(config)
    with app.db.write() as conn:
        running.create(conn, checkfirst=True)
    app.registry.usage = lambda conn, sha: [
        "edge-1" for _ in conn.execute(sa.select(running).where(running.c.sha256 == sha))
    ]
    app.add_service("fake.Service", lambda server: None, {"Ping": Role.AGENT})
    assert app.access["/fake.Service/Ping"] is Role.AGENT
    record = asyncio.run(app.registry.put(b"running program", name="live"))
    with app.db.write() as conn:
        conn.execute(sa.insert(running).values(sha256=record.sha256))
    with serve_app(app, grace=1):
        with client_for(app, "admin") as client, pytest.raises(ConflictError) as caught:
            client.programs.delete(record.sha256)
        assert "edge-1" in str(caught.value) and caught.value.code == "FAILED_PRECONDITION"


def test_an_unknown_area_is_refused_by_name(tmp_path: Path):
    values = config_values(tmp_path / "data", extensions=["spikefleet_server.fleet", "nope_x"])
    with pytest.raises(ServerConfigError, match="unknown extension 'nope_x'"):
        load_config(None, environ={}, overrides=values)
