"""``listeners``: several gRPC servers in one process share the listen address
(SO_REUSEPORT), so a reconnect storm's new calls are taken up by several accept loops.
Whichever listener the kernel gives a connection, every API is served there the same
way; stopping ends them all."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_process import SERVER, ServerProcess
from support.raw_agent import RawAgent
from support.server import TOKENS, RunningServer, config_values, serve_app

from spikefleet.client import Client
from spikefleet.errors import ServerConfigError
from spikefleet_server.app import ServerApp
from spikefleet_server.config import hash_token, load_config

WHICH = "test.Listener"
FRESH = [("grpc.use_local_subchannel_pool", 1)]  # a connection of the channel's own


def app_with_listeners(data_dir: Path, listeners: int) -> ServerApp:
    """An app whose extra method ``/test.Listener/Which`` answers the index of the
    listener that took the call (in the order the app built them)."""
    config = load_config(None, environ={}, overrides=config_values(data_dir, listeners=listeners))
    app = ServerApp(config)
    built: list[grpc.aio.Server] = []

    def add(server: grpc.aio.Server) -> None:
        index = len(built)
        built.append(server)

        async def which(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return str(index).encode()

        handler = grpc.unary_unary_rpc_method_handler(which)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(WHICH, {"Which": handler}),)
        )

    app.add_service(WHICH, add, {"Which": None})
    return app


def which(channel: grpc.Channel) -> int:
    return int(channel.unary_unary(f"/{WHICH}/Which")(b"", timeout=30))


@contextmanager
def channels_on_each_listener(address: str, listeners: int) -> Iterator[dict[int, grpc.Channel]]:
    """An open connection on each listener, by index. The kernel chooses where a
    connection lands: dial until each was seen (300 dials miss one of 3 with odds of
    about 1e-52)."""
    found: dict[int, grpc.Channel] = {}
    try:
        for _ in range(300):
            channel = grpc.insecure_channel(address, options=FRESH)
            index = which(channel)
            if index in found:
                channel.close()
            else:
                found[index] = channel
            if len(found) == listeners:
                break
        assert len(found) == listeners, f"connections reached only listeners {sorted(found)}"
        yield found
    finally:
        for channel in found.values():
            channel.close()


def outcome(channel: grpc.Channel, method: str) -> grpc.StatusCode:
    """What the server does with one empty message to ``method`` (as an admin): OK at
    its first answer, or the status it ended with (UNIMPLEMENTED: not served here)."""
    call = channel.stream_stream(method)(
        iter([b""]), metadata=(("authorization", f"Bearer {TOKENS['admin']}"),), timeout=60
    )
    try:
        next(call)
        return grpc.StatusCode.OK
    except StopIteration:
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    finally:
        call.cancel()


@pytest.fixture
def three(tmp_path: Path) -> Iterator[RunningServer]:
    with serve_app(app_with_listeners(tmp_path / "data", 3), grace=1) as running:
        yield running


def test_every_listener_serves_every_api_behind_the_same_interceptors(
    three: RunningServer,
) -> None:
    methods = sorted(three.app.access)  # every method of every service, health included
    assert {"/spikefleet.v1.Fleet/Connect", "/grpc.health.v1.Health/Watch"} <= set(methods)
    # (grpcio-reflection serves only v1alpha, though v1 has an access entry)
    unserved = {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}
    with channels_on_each_listener(three.address, 3) as channels:
        for index, channel in channels.items():
            missing = {m for m in methods if outcome(channel, m) is grpc.StatusCode.UNIMPLEMENTED}
            assert missing == unserved, f"listener {index} does not serve {missing - unserved}"
            assert outcome(channel, "/spikefleet.v1.Nothing/Here") is grpc.StatusCode.UNIMPLEMENTED
            # authentication runs on this listener too
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary("/spikefleet.v1.RegistryService/List")(b"", timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # and an agent's stream works end to end
            agent_id = f"on-listener-{index}"
            with RawAgent("", agent_id, token=TOKENS["agent"], channel=channel) as agent:
                assert agent.registered().last_telemetry_seq == 0
                agent.telemetry(seq=1, frames=10, backend="sim")
                assert agent.wait_acks(1)[0].seq == 1


def test_many_agents_dialling_at_once_all_register_over_every_listener(tmp_path: Path) -> None:
    count = 120
    with serve_app(app_with_listeners(tmp_path / "data", 4), grace=1) as running:
        channels = [grpc.insecure_channel(running.address, options=FRESH) for _ in range(count)]
        try:
            took = {which(channel) for channel in channels}
            agents = [
                RawAgent("", f"storm-{i:03d}", token=TOKENS["agent"], channel=channel)
                for i, channel in enumerate(channels)
            ]
            try:
                for agent in agents:
                    assert agent.registered().last_telemetry_seq == 0
                with Client(running.address, token=TOKENS["viewer"]) as client:
                    connected = {agent.agent_id for agent in client.agents() if agent.connected}
            finally:
                for agent in agents:
                    agent.close()
        finally:
            for channel in channels:
                channel.close()
    assert took == {0, 1, 2, 3}  # 120 dials miss one of 4 with odds of about 1e-14
    assert connected == {f"storm-{i:03d}" for i in range(count)}


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port``: a socket without SO_REUSEPORT can listen there
    (SO_REUSEADDR: connections the server closed may linger in TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def test_stopping_ends_the_calls_on_every_listener_and_frees_the_port(tmp_path: Path) -> None:
    with serve_app(app_with_listeners(tmp_path / "data", 3), grace=1) as running:
        port = running.port
        assert not port_is_free(port)
        with channels_on_each_listener(running.address, 3) as channels:
            watches = []
            for channel in channels.values():
                watch = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(), timeout=120
                )
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                watches.append(watch)
            running.call(running.app.stop(1))
            for watch in watches:  # each listener's call ended with its server
                with pytest.raises(grpc.RpcError) as ended:
                    for _ in watch:
                        pass
                assert ended.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED
        assert port_is_free(port)


def test_listeners_is_a_setting_and_an_environment_variable_within_bounds(tmp_path: Path) -> None:
    base = config_values(tmp_path / "data")
    from_env = load_config(None, environ={"SPIKEFLEET_SERVER_LISTENERS": "3"}, overrides=base)
    assert from_env.listeners == 3
    assert dict(from_env.grpc_options())["grpc.so_reuseport"] == 1
    for wrong in (0, 65):
        with pytest.raises(ServerConfigError, match="listeners must be between 1 and 64"):
            load_config(None, environ={}, overrides={**base, "listeners": wrong})


@pytest.mark.slow
def test_serve_with_listeners_answers_on_its_port_and_exits_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        "extensions = []\n"
        + "".join(
            f'[[tokens]]\nname = "{role}"\nrole = "{role}"\nsha256 = "{hash_token(token)}"\n'
            for role, token in TOKENS.items()
        )
    )
    argv = [SERVER, "serve", "--config", str(config), "--data-dir", str(tmp_path / "data")]
    argv += ["--listen", "127.0.0.1:0", "--insecure-loopback", "--listeners", "3"]
    with ServerProcess(argv) as server:
        assert any('"app.serving"' in line and '"listeners": 3' in line for line in server.log)
        viewer = (("authorization", f"Bearer {TOKENS['viewer']}"),)
        for _ in range(10):
            with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=FRESH) as channel:
                listed = channel.unary_unary("/spikefleet.v1.RegistryService/List")(
                    b"", metadata=viewer, timeout=30
                )
                assert listed == b""  # an empty registry
        assert server.terminate() == 0
    assert port_is_free(server.port)
