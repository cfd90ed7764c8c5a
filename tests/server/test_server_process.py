"""The real ``spikefleet-server`` process: durable across kill -9, drains on SIGTERM."""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_process import serve
from support.server import FC_ARCH, TOKENS, fc_model

from spikefleet.client import Client
from spikefleet.program.signing import PublicKey, TrustedKeys, verify
from spikefleet.v1 import converter_pb2, converter_pb2_grpc
from spikefleet_server.config import hash_token

pytestmark = pytest.mark.slow


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "server.toml"
    tokens = "".join(
        f'[[tokens]]\nname = "{role}"\nrole = "{role}"\nsha256 = "{hash_token(token)}"\n'
        for role, token in TOKENS.items()
    )
    # the core alone: other areas' extensions have their own process tests
    path.write_text(f"drain_seconds = 60\nworkers = 1\nextensions = []\n{tokens}")
    return path


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(_stat(entry.name)[1] or 0) == pid:
            found.add(int(entry.name))
    return found


def _stat(pid: str) -> tuple[str, str]:
    """A process's state and parent pid; ("", "") once it is gone."""
    try:
        fields = (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "", ""
    return fields[0], fields[1]


def still_running(pids: set[int], within: float = 60.0) -> set[int]:
    """Those of ``pids`` still running (not gone, not a zombie) after waiting up to ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        running = {pid for pid in pids if _stat(str(pid))[0] not in ("", "Z")}
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


class HeldUpload:
    """A Convert call that sends its options and half the file, then waits for release."""

    def __init__(self, port: int, model: Path, name: str) -> None:
        self.data = model.read_bytes()
        self.release = threading.Event()
        self.replies: list[converter_pb2.ConvertReply] = []
        self.error: grpc.RpcError | None = None
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.options = converter_pb2.ConvertOptions(
            filename=model.name,
            arch=FC_ARCH,
            name=name,
            total_size=len(self.data),
            upload_sha256=hashlib.sha256(self.data).hexdigest(),
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _requests(self) -> Iterator[converter_pb2.ConvertRequest]:
        half = len(self.data) // 2
        yield converter_pb2.ConvertRequest(options=self.options)
        yield converter_pb2.ConvertRequest(chunk=self.data[:half])
        self.release.wait()
        yield converter_pb2.ConvertRequest(chunk=self.data[half:])

    def _run(self) -> None:
        stub = converter_pb2_grpc.ConverterServiceStub(self.channel)
        metadata = (("authorization", f"Bearer {TOKENS['deployer']}"),)
        try:
            for reply in stub.Convert(self._requests(), metadata=metadata, timeout=300):
                self.replies.append(reply)
        except grpc.RpcError as error:
            self.error = error

    def finish(self) -> None:
        self.release.set()
        self.thread.join(timeout=300)
        self.channel.close()


def test_kill_9_mid_upload_loses_no_stored_program(tmp_path: Path, config: Path):
    data_dir = tmp_path / "data"
    with serve(config, data_dir) as server:
        with Client(f"127.0.0.1:{server.port}", token=TOKENS["deployer"]) as client:
            stored = client.convert(fc_model(tmp_path / "kept.safetensors"), arch=FC_ARCH)
            before = client.programs.get(stored.sha256)
            keys = client.programs.trusted_keys()
        upload = HeldUpload(server.port, fc_model(tmp_path / "cut.safetensors", seed=5), "cut")
        server.wait_for(r'"convert.upload_started".*"name": "cut"')
        assert any((data_dir / "uploads").iterdir())
        server.kill()
        upload.finish()
    assert upload.error is not None

    with serve(config, data_dir) as server:
        with Client(f"127.0.0.1:{server.port}", token=TOKENS["viewer"]) as client:
            assert client.programs.list() == [stored]
            after = client.programs.get(stored.sha256)
            assert client.programs.trusted_keys() == keys
        assert not (data_dir / "uploads").exists() or not any((data_dir / "uploads").iterdir())
        assert server.terminate() == 0
    assert after == before
    trusted = TrustedKeys(PublicKey.from_pem(pem) for pem in keys.values())
    assert verify(after, trusted)


def test_kill_9_takes_the_conversion_workers_with_it(tmp_path: Path, config: Path):
    with serve(config, tmp_path / "data") as server:
        with Client(f"127.0.0.1:{server.port}", token=TOKENS["deployer"]) as client:
            client.convert(fc_model(tmp_path / "model.safetensors"), arch=FC_ARCH)
        workers = children(server.process.pid)  # the pool's worker and its resource tracker
        assert workers
        server.kill()
    assert still_running(workers) == set()


def test_sigterm_lets_an_inflight_conversion_finish_then_exits(tmp_path: Path, config: Path):
    with serve(config, tmp_path / "data") as server:
        upload = HeldUpload(server.port, fc_model(tmp_path / "late.safetensors"), "late")
        server.wait_for(r'"convert.upload_started".*"name": "late"')
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(r"app\.draining")
        upload.finish()
        assert upload.error is None, upload.error
        assert upload.replies[-1].result.program.name == "late"
        assert server.process.wait(timeout=120) == 0
    with serve(config, tmp_path / "data") as server:
        with Client(f"127.0.0.1:{server.port}", token=TOKENS["viewer"]) as client:
            assert [p.name for p in client.programs.list()] == ["late"]
        server.terminate()
