"""ConverterService: a real conversion lands in the registry, signed; every bad
upload gets the right status and a message naming the problem, and leaves nothing."""

from __future__ import annotations

import hashlib
import math
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from support.server import FC_ARCH, TOKENS, client_for, fc_model, malicious_pickle

from spikefleet.client import ConvertProgress
from spikefleet.errors import AuthError, InvalidRequestError, QuotaError, ServerError
from spikefleet.program.codec import decode
from spikefleet.program.signing import TrustedKeys, verify
from spikefleet.v1 import converter_pb2, converter_pb2_grpc
from spikefleet_server.app import ServerApp


@pytest.fixture(autouse=True)
def no_upload_in_flight(server: ServerApp) -> Iterator[None]:
    """Each test starts with no upload on the server's disk.

    The server is shared by the module; a test that fails slow (under load, its
    conversion still running when the client gives up) leaves its upload there
    until that conversion ends, and the next test's "left nothing" check would
    fail for it. So after each test the uploads drain (bounded), and what a
    stuck one left is removed.
    """
    yield
    uploads = server.config.data_dir / "uploads"
    deadline = time.monotonic() + 120
    while any(uploads.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for leftover in uploads.iterdir():
        shutil.rmtree(leftover, ignore_errors=True)


def assert_left_nothing(server: ServerApp, name: str) -> None:
    assert server.registry.list(name=name) == []
    assert list((server.config.data_dir / "uploads").iterdir()) == []


def test_a_model_upload_becomes_a_signed_stored_program(server: ServerApp, tmp_path: Path):
    events: list[ConvertProgress] = []
    with client_for(server) as client:
        info = client.convert(
            fc_model(tmp_path / "fc.safetensors"),
            arch=FC_ARCH,
            name="fc-net",
            labels={"team": "vision"},
            class_labels=[str(i) for i in range(10)],
            on_progress=events.append,
        )
        signed = client.programs.get(info.sha256)
    stages = [e.stage for e in events]
    assert stages[0] == "upload" and "convert" in stages and stages[-1] == "store"
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (info.name, info.version, info.labels) == ("fc-net", 1, {"team": "vision"})
    assert info.key_id == server.signing_key.key_id
    assert (
        info.source_sha256 == hashlib.sha256((tmp_path / "fc.safetensors").read_bytes()).hexdigest()
    )
    program = decode(verify(signed, TrustedKeys([server.signing_key.public_key])))
    assert program.name == "fc-net" and program.labels == [str(i) for i in range(10)]
    assert info.fidelity  # the converter's notes at least
    assert list((server.config.data_dir / "uploads").iterdir()) == []


def test_a_pickle_that_runs_code_is_refused_without_running(server: ServerApp, tmp_path: Path):
    marker = tmp_path / "pwned"
    model = malicious_pickle(tmp_path / "evil.pt", marker)
    with client_for(server) as client, pytest.raises(InvalidRequestError) as caught:
        client.convert(model, arch=FC_ARCH, name="evil")
    assert caught.value.code == "INVALID_ARGUMENT"
    assert "evil.pt" in str(caught.value) and "unpickle" in str(caught.value)
    assert not marker.exists()
    assert_left_nothing(server, "evil")


@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_weights_are_refused(server: ServerApp, tmp_path: Path, poison: float):
    model = fc_model(tmp_path / "diverged.safetensors", poison=poison)
    with client_for(server) as client, pytest.raises(InvalidRequestError) as caught:
        client.convert(model, arch=FC_ARCH, name="diverged")
    assert "NaN or Inf" in str(caught.value) and "fc2" in str(caught.value)
    assert_left_nothing(server, "diverged")


def test_an_unsupported_layer_is_named(server: ServerApp, tmp_path: Path):
    model = fc_model(tmp_path / "fc.safetensors")
    with client_for(server) as client, pytest.raises(InvalidRequestError) as caught:
        client.convert(model, arch="Input(8,8,2) FC(32) Leaky MaxPool(2) FC(10) Leaky", name="pool")
    assert "maxpool" in str(caught.value).lower() and "after a Linear" in str(caught.value)
    assert_left_nothing(server, "pool")


def test_an_oversized_upload_is_resource_exhausted(server: ServerApp, tmp_path: Path):
    big = tmp_path / "big.safetensors"
    big.write_bytes(b"\0" * (server.config.max_upload_bytes + 1))
    with client_for(server) as client, pytest.raises(QuotaError) as caught:
        client.convert(big, arch=FC_ARCH, name="big")
    assert caught.value.code == "RESOURCE_EXHAUSTED"
    assert f"limit of {server.config.max_upload_bytes} bytes" in str(caught.value)
    assert_left_nothing(server, "big")


def raw_convert(server: ServerApp, messages: list[converter_pb2.ConvertRequest]) -> grpc.RpcError:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = converter_pb2_grpc.ConverterServiceStub(channel)
    metadata = (("authorization", f"Bearer {TOKENS['deployer']}"),)

    def requests() -> Iterator[converter_pb2.ConvertRequest]:
        yield from messages

    with channel, pytest.raises(grpc.RpcError) as caught:
        list(stub.Convert(requests(), metadata=metadata, timeout=60))
    return caught.value  # type: ignore[return-value]


def options(data: bytes, name: str, **changes: object) -> converter_pb2.ConvertRequest:
    fields: dict[str, object] = {
        "filename": "fc.safetensors",
        "arch": FC_ARCH,
        "name": name,
        "total_size": len(data),
        "upload_sha256": hashlib.sha256(data).hexdigest(),
    }
    fields.update(changes)
    return converter_pb2.ConvertRequest(options=converter_pb2.ConvertOptions(**fields))


def chunk(data: bytes) -> converter_pb2.ConvertRequest:
    return converter_pb2.ConvertRequest(chunk=data)


def test_a_truncated_upload_is_refused(server: ServerApp, tmp_path: Path):
    data = fc_model(tmp_path / "fc.safetensors").read_bytes()
    error = raw_convert(server, [options(data, "cut"), chunk(data[: len(data) // 2])])
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"truncated upload: received {len(data) // 2} of {len(data)} bytes" in error.details()
    assert_left_nothing(server, "cut")


def test_an_upload_that_outgrows_the_limit_midway_is_stopped(server: ServerApp):
    limit = server.config.max_upload_bytes
    data = b"\0" * (limit + 10)
    announced = options(data, "sneaky", total_size=limit, upload_sha256="0" * 64)
    error = raw_convert(server, [announced, chunk(data[:limit]), chunk(data[limit:])])
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_left_nothing(server, "sneaky")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda d: [options(d, "x", upload_sha256="1" * 64), chunk(d)], "sha256 does not match"),
        (lambda d: [chunk(d)], "first message must carry the options"),
        (lambda d: [options(d, "x", filename="model.exe"), chunk(d)], "unsupported model file"),
        (lambda d: [options(d, "../x"), chunk(d)], "invalid program name"),
        (lambda d: [options(d, "x"), options(d, "x")], "options sent twice"),
        (lambda d: [options(d, "x", weights_bits=9), chunk(d)], "weights_bits 9"),
    ],
)
def test_malformed_uploads_are_invalid_argument(server: ServerApp, tmp_path: Path, build, message):
    data = fc_model(tmp_path / "fc.safetensors").read_bytes()
    error = raw_convert(server, build(data))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert_left_nothing(server, "x")


@pytest.mark.parametrize(
    ("role", "code"),
    [(None, "UNAUTHENTICATED"), ("viewer", "PERMISSION_DENIED"), ("agent", "PERMISSION_DENIED")],
)
def test_only_deployers_and_admins_may_convert(server: ServerApp, tmp_path: Path, role, code):
    model = fc_model(tmp_path / "fc.safetensors")
    with client_for(server, role) as client, pytest.raises(AuthError) as caught:
        client.convert(model, arch=FC_ARCH, name="unauthorised")
    assert caught.value.code == code
    assert_left_nothing(server, "unauthorised")


def test_conversions_queue_for_the_worker_and_all_complete(server: ServerApp, tmp_path: Path):
    models = [fc_model(tmp_path / f"queued{i}.safetensors", seed=10 + i) for i in range(3)]
    results: dict[int, str] = {}

    def run(i: int) -> None:
        with client_for(server) as client:
            results[i] = client.convert(models[i], arch=FC_ARCH, name=f"queued-{i}").sha256

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == [0, 1, 2] and len(set(results.values())) == 3
    for i, sha in results.items():
        assert server.registry.describe(sha).name == f"queued-{i}"


def test_a_client_that_goes_away_mid_upload_leaves_nothing(server: ServerApp, tmp_path: Path):
    data = fc_model(tmp_path / "fc.safetensors").read_bytes()
    release = threading.Event()

    def requests() -> Iterator[converter_pb2.ConvertRequest]:
        yield options(data, "abandoned")
        yield chunk(data[: len(data) // 2])
        release.wait()

    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = converter_pb2_grpc.ConverterServiceStub(channel)
    metadata = (("authorization", f"Bearer {TOKENS['deployer']}"),)
    call = stub.Convert(requests(), metadata=metadata, timeout=60)
    first = next(call)  # the server has the upload open
    assert first.progress.stage == "upload"
    call.cancel()
    release.set()
    channel.close()
    uploads = server.config.data_dir / "uploads"
    deadline = time.monotonic() + 30
    while any(uploads.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_left_nothing(server, "abandoned")


def test_a_conversion_past_its_time_limit_is_stopped_and_the_pool_recovers(
    server: ServerApp, tmp_path: Path
):
    model = fc_model(tmp_path / "slow.safetensors", seed=42)
    limit = server.converter.convert_timeout
    server.converter.convert_timeout = 0.001
    try:
        with client_for(server) as client, pytest.raises(ServerError) as caught:
            client.convert(model, arch=FC_ARCH, name="slow")
    finally:
        server.converter.convert_timeout = limit
    assert caught.value.code == "DEADLINE_EXCEEDED"
    assert "longer than 0.001 s (convert_timeout_seconds)" in str(caught.value)
    assert_left_nothing(server, "slow")
    with client_for(server) as client:
        assert client.convert(model, arch=FC_ARCH, name="slow").version == 1


def test_the_input_spec_sent_is_recorded_and_a_bad_one_refused(server: ServerApp, tmp_path: Path):
    from spikefleet.events import InputSpec

    spec = InputSpec(sensor_size=(16, 16, 2), time_window=20_000, downsample=2, clip_bits=4)
    model = fc_model(tmp_path / "fc.safetensors")
    with client_for(server) as client:
        info = client.convert(model, arch=FC_ARCH, name="fc-spec", input_spec=spec)
        program = decode(
            verify(client.programs.get(info.sha256), TrustedKeys([server.signing_key.public_key]))
        )
    assert program.input_spec == spec
    error = raw_convert(
        server,
        [options(model.read_bytes(), "fc-bad", input_spec_json='{"sensor": 1}')],
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown key(s) sensor" in (error.details() or "")


def test_a_hardware_refusal_names_the_layer_and_the_fix_in_one_line(
    server: ServerApp, tmp_path: Path
):
    """A 5x5 conv without padding maps onto no AKD1000: the status says padding=2."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    weights = {
        "conv1.weight": rng.normal(0, 0.3, (4, 2, 5, 5)).astype(np.float32),
        "conv1.bias": np.zeros(4, np.float32),
        "fc1.weight": rng.normal(0, 0.3, (10, 4 * 8 * 8)).astype(np.float32),
        "fc1.bias": np.zeros(10, np.float32),
    }
    model = tmp_path / "tutorial"  # no suffix: the format is read from the content
    save_file(weights, str(model))
    with client_for(server) as client, pytest.raises(InvalidRequestError) as caught:
        client.convert(model, arch="Input(12,12,2) Conv(4,5,p0) Leaky FC(10) Leaky", name="tut")
    message = str(caught.value)
    assert "\n" not in message
    assert "conv1" in message and "padding=2" in message and "--no-hardware" in message
    assert_left_nothing(server, "tut")
