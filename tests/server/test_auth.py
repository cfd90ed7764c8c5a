"""Roles: viewer < deployer < admin, agent apart; every call is checked, refusals say why."""

from __future__ import annotations

import grpc
import pytest
from support.server import TOKENS

from spikefleet.v1 import registry_pb2, registry_pb2_grpc
from spikefleet_server.app import ServerApp
from spikefleet_server.auth import Principal, Role, TokenTable, allows, describe_access
from spikefleet_server.config import hash_token


@pytest.mark.parametrize(
    ("access", "role", "allowed"),
    [
        (Role.VIEWER, Role.VIEWER, True),
        (Role.VIEWER, Role.ADMIN, True),
        (Role.DEPLOYER, Role.VIEWER, False),
        (Role.ADMIN, Role.DEPLOYER, False),
        (Role.VIEWER, Role.AGENT, False),
        (Role.AGENT, Role.AGENT, True),
        (Role.AGENT, Role.ADMIN, False),
        (frozenset({Role.VIEWER, Role.AGENT}), Role.AGENT, True),
        (frozenset({Role.VIEWER, Role.AGENT}), Role.DEPLOYER, True),
        (None, Role.AGENT, True),
    ],
)
def test_role_ladder_with_agent_apart(access, role: Role, allowed: bool):
    assert allows(access, role) is allowed


def test_access_descriptions_read_as_english():
    assert describe_access(Role.DEPLOYER) == "deployer or higher"
    assert describe_access(frozenset({Role.AGENT, Role.VIEWER})) == "agent or viewer or higher"


def test_tokens_are_matched_by_digest():
    table = TokenTable([(Principal("ci", Role.DEPLOYER), hash_token("s3cret"))])
    assert table.lookup("s3cret").role is Role.DEPLOYER  # type: ignore[union-attr]
    assert table.lookup("s3cret ") is None and table.lookup("") is None


def test_an_agent_token_registers_as_its_own_agents_only():
    bound = Principal("rack-3", Role.AGENT, ("rack3-*", "spare"))
    assert bound.may_register_as("rack3-01") and bound.may_register_as("spare")
    assert not bound.may_register_as("rack4-01") and not bound.may_register_as("spare-2")
    assert Principal("fleet", Role.AGENT).may_register_as("anything")
    assert not Principal("ops", Role.ADMIN).may_register_as("edge-1")


def call_list(server: ServerApp, metadata: tuple[tuple[str, str], ...]) -> grpc.RpcError | None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        try:
            stub.List(registry_pb2.ListProgramsRequest(), metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return error
    return None


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing bearer token"),
        ((("authorization", "Bearer wrong"),), "invalid bearer token"),
        ((("authorization", f"Basic {TOKENS['viewer']}"),), "invalid bearer token"),
    ],
)
def test_missing_or_wrong_tokens_are_unauthenticated(server: ServerApp, metadata, message):
    error = call_list(server, metadata)
    assert error is not None and error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert message in error.details()


def test_a_role_too_low_is_permission_denied_naming_both_roles(server: ServerApp):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Delete(
                registry_pb2.ProgramRef(name="anything"),
                metadata=(("authorization", f"Bearer {TOKENS['deployer']}"),),
                timeout=10,
            )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "needs role admin or higher" in caught.value.details()
    assert "has role deployer" in caught.value.details()


def test_agents_may_fetch_keys_but_not_list_programs(server: ServerApp):
    agent = (("authorization", f"Bearer {TOKENS['agent']}"),)
    error = call_list(server, agent)
    assert error is not None and error.code() is grpc.StatusCode.PERMISSION_DENIED
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        keys = stub.TrustedKeys(registry_pb2.TrustedKeysRequest(), metadata=agent, timeout=10)
    assert [k.key_id for k in keys.keys] == [server.signing_key.key_id]


def test_methods_nobody_was_granted_are_refused(server: ServerApp):
    server.access.pop("/spikefleet.v1.RegistryService/List")
    try:
        error = call_list(server, (("authorization", f"Bearer {TOKENS['admin']}"),))
    finally:
        server.access["/spikefleet.v1.RegistryService/List"] = Role.VIEWER
    assert error is not None and error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "not open to any role" in error.details()


def test_every_call_gets_a_request_id_and_keeps_a_given_one(server: ServerApp):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        viewer = (("authorization", f"Bearer {TOKENS['viewer']}"),)
        _, call = stub.List.with_call(registry_pb2.ListProgramsRequest(), metadata=viewer)
        generated = dict(call.trailing_metadata())["x-request-id"]
        _, call = stub.List.with_call(
            registry_pb2.ListProgramsRequest(), metadata=(*viewer, ("x-request-id", "req-42"))
        )
        assert dict(call.trailing_metadata())["x-request-id"] == "req-42"
    assert len(generated) == 32
