"""Every gRPC method of the server and of the agent, fed generated and mutated messages
through real channels to real processes.

Whatever arrives, the answer is a status that names the problem (never UNKNOWN or
INTERNAL), the processes stay up with bounded memory, and other clients are still
served. Messages are generated from the .proto descriptors, so a new method or field is
fuzzed without touching this file; values favour the edges (0, 2**63, 2**64-1, NaN,
empty and odd strings), and a share of requests are serialized messages with bytes
flipped, dropped or appended.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.agent import make_key, make_program, signed_program
from support.fleet_processes import AgentChild
from support.processes import serve
from support.server import TOKENS

from spikefleet.program.signing import TrustedKeys
from spikefleet.v1 import (
    converter_pb2,
    fleet_pb2,
    inference_pb2,
    registry_pb2,
    rollout_pb2,
)
from spikefleet_agent.programs.slots import SlotStore
from spikefleet_server.config import hash_token

pytestmark = pytest.mark.slow

EXAMPLES = 30  # per method: ~40 methods stay within a couple of minutes
BAD_CODES = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
MEMORY_GROWTH = 300 * 1024**2

_EDGE_U64 = [0, 1, 2**31, 2**32 - 1, 2**53, 2**63 - 1, 2**63, 2**64 - 1]
_EDGE_I64 = [0, -1, 1, -(2**63), 2**63 - 1, 2**31, -(2**31)]
_TEXT = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["", "a" * 64, "0" * 64, "../../etc/passwd", "\x00", "édge-1", "*", "x" * 300]),
)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.one_of(st.sampled_from(_EDGE_U64), st.integers(0, 2**64 - 1))
    if kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return st.one_of(st.sampled_from(_EDGE_I64), st.integers(-(2**63), 2**63 - 1))
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.one_of(st.sampled_from([0, 1, 2, 34, 2**32 - 1]), st.integers(0, 2**32 - 1))
    if kind in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return st.integers(-(2**31), 2**31 - 1)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-2, 8)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if kind == FieldDescriptor.TYPE_STRING:
        return _TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=300)
    raise AssertionError(f"unhandled field type {kind}")


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    """A message of ``descriptor``'s type with a random subset of its fields set."""
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        target = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for _ in range(draw(st.integers(0, 3))):
                key = draw(_scalar(key_field))
                if value_field.message_type is not None:
                    if depth < 2:
                        target[key].CopyFrom(draw(messages(value_field.message_type, depth + 1)))
                else:
                    target[key] = draw(_scalar(value_field))
        elif field.message_type is not None:
            if depth >= 2:
                continue
            count = draw(st.integers(0, 3)) if field.is_repeated else 1
            for _ in range(count):
                value = draw(messages(field.message_type, depth + 1))
                (target.add() if field.is_repeated else target).CopyFrom(value)
        elif field.is_repeated:
            target.extend(draw(st.lists(_scalar(field), max_size=4)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


@st.composite
def wire_bytes(draw: st.DrawFn, descriptor: Descriptor) -> bytes:
    """A generated message's bytes, mutated half of the time."""
    data = bytearray(draw(messages(descriptor)).SerializeToString())
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 4))):
            action = draw(st.sampled_from(["flip", "drop", "append", "truncate"]))
            if action == "flip" and data:
                i = draw(st.integers(0, len(data) - 1))
                data[i] ^= draw(st.integers(1, 255))
            elif action == "drop" and data:
                del data[draw(st.integers(0, len(data) - 1))]
            elif action == "append":
                data += draw(st.binary(min_size=1, max_size=12))
            elif action == "truncate" and data:
                del data[draw(st.integers(0, len(data) - 1)) :]
    return bytes(data)


# Valid first messages, so the fuzz also reaches past the first check (a registered
# Connect stream, a batch of the right shape) before the generated messages follow.
SEEDS: dict[str, Message] = {
    "spikefleet.v1.Fleet.Connect": fleet_pb2.AgentMessage(
        register=fleet_pb2.Register(agent_id="fuzz-edge", backend="sim")
    ),
    "spikefleet.v1.Inference.Infer": inference_pb2.FrameBatch(
        shape=[1, 34, 34, 2], frames=bytes(34 * 34 * 2)
    ),
    "spikefleet.v1.Inference.Stream": inference_pb2.FrameBatch(
        shape=[2, 34, 34, 2], frames=bytes(2 * 34 * 34 * 2), sample_id="s"
    ),
}


def requests_for(method: MethodDescriptor) -> st.SearchStrategy[list[bytes]]:
    generated = st.lists(wire_bytes(method.input_type), min_size=1, max_size=3)
    seed = SEEDS.get(method.full_name)
    if seed is None:
        return generated
    seeded = st.lists(wire_bytes(method.input_type), max_size=3).map(
        lambda rest: [seed.SerializeToString(), *rest]
    )
    return st.one_of(generated, seeded)


def _methods(*modules: Any) -> list[MethodDescriptor]:
    return [
        method
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


SERVER_METHODS = _methods(converter_pb2, fleet_pb2, registry_pb2, rollout_pb2)
AGENT_METHODS = _methods(inference_pb2)


def _rss(pid: int) -> int:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert found is not None
    return int(found.group(1)) * 1024


class Target:
    def __init__(self, address: str, pid: int, token: str) -> None:
        self.address, self.pid, self.token = address, pid, token
        self.channel = grpc.insecure_channel(address)
        self.rss_before = _rss(pid)

    def call(self, method: MethodDescriptor, requests: list[bytes]) -> grpc.StatusCode:
        path = f"/{method.containing_service.full_name}/{method.name}"
        streams = (method.client_streaming, method.server_streaming)
        invoke = {
            (False, False): self.channel.unary_unary,
            (False, True): self.channel.unary_stream,
            (True, False): self.channel.stream_unary,
            (True, True): self.channel.stream_stream,
        }[streams](path)
        token = TOKENS["agent"] if method.containing_service.name == "Fleet" else self.token
        metadata = (("authorization", f"Bearer {token}"),)
        request: Any = iter(requests) if method.client_streaming else requests[0]
        try:
            reply = invoke(request, metadata=metadata, timeout=5)
            if method.server_streaming:
                for _ in reply:
                    pass
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz-server")
    tokens = "".join(
        f'[[tokens]]\nname = "{role}"\nrole = "{role}"\nsha256 = "{hash_token(token)}"\n'
        for role, token in TOKENS.items()
    )
    (root / "server.toml").write_text(f"drain_seconds = 1\nworkers = 1\n{tokens}")
    with serve(root / "server.toml", root / "data") as process:
        yield Target(f"127.0.0.1:{process.port}", process.process.pid, TOKENS["admin"])
        assert process.process.poll() is None, "the server died"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz-agent")
    key = make_key(root / "keys")
    sha, data = signed_program(make_program(1), key)
    slots = SlotStore(root / "state" / "programs", TrustedKeys.load(root / "keys"))
    slots.write("a", data)
    slots.activate("a", sha)
    (root / "inference.token").write_text("fuzz-token")
    (root / "inference.token").chmod(0o600)
    config = root / "agent.toml"
    config.write_text(
        f'agent_id = "fuzz"\nstate_dir = "{root / "state"}"\nlock_dir = "{root / "locks"}"\n'
        f'trusted_keys = ["{root / "keys"}"]\n'
        f'[inference]\naddress = "127.0.0.1:0"\ntoken_file = "{root / "inference.token"}"\n'
    )
    child = AgentChild(config)
    try:
        yield Target(child.address, child.process.pid, "fuzz-token")
        assert child.process.poll() is None, "the agent died"
    finally:
        child.stop()


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def _fuzz(target: Target, method: MethodDescriptor) -> None:
    seen: list[grpc.StatusCode] = []  # every code answered, for the report below

    @FUZZ
    @given(requests_for(method))
    def run(requests: list[bytes]) -> None:
        code = target.call(method, requests)
        seen.append(code)
        assert code not in BAD_CODES, f"{method.full_name} answered {code.name} to {requests!r}"

    run()
    assert seen
    print(method.full_name, sorted({code.name for code in seen}))


@pytest.mark.parametrize("method", SERVER_METHODS, ids=lambda m: m.full_name)
def test_every_server_method_answers_fuzz_with_a_meaningful_status(
    server: Target, method: MethodDescriptor
) -> None:
    _fuzz(server, method)


@pytest.mark.parametrize("method", AGENT_METHODS, ids=lambda m: m.full_name)
def test_every_agent_method_answers_fuzz_with_a_meaningful_status(
    agent: Target, method: MethodDescriptor
) -> None:
    _fuzz(agent, method)


def test_after_the_fuzzing_both_still_serve_others_with_bounded_memory(
    server: Target, agent: Target
) -> None:
    from spikefleet.client import Client
    from spikefleet.client.agent import AgentClient

    started = time.monotonic()
    with Client(server.address, token=TOKENS["viewer"], tls=False) as client:
        client.programs.list()
    with AgentClient(agent.address, token="fuzz-token") as client:
        assert client.status().agent_id == "fuzz"
    assert time.monotonic() - started < 60  # a hang, not a speed goal
    for target in (server, agent):
        growth = _rss(target.pid) - target.rss_before
        assert growth < MEMORY_GROWTH, f"{target.address} grew by {growth / 2**20:.0f} MiB"
