"""``spikefleet --server ADDR convert`` makes the program the local converter makes,
signed by the server, and it is listed, described and fetched back byte-identical."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from support.models import REFERENCE_ARCH, reference_state_dict
from support.server import TOKENS

from spikefleet.cli.main import main
from spikefleet.program.codec import decode, encode
from spikefleet.program.model import Program
from spikefleet.program.signing import SignedProgram, TrustedKeys, verify
from spikefleet_server.app import ServerApp


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("model")
    reference = reference_state_dict(root)
    np.savez(root / "calib.npz", frames=reference.frames, labels=reference.labels)
    return reference.weights, root / "calib.npz"


def without_timestamp(program: Program) -> bytes:
    assert program.provenance is not None
    provenance = dataclasses.replace(program.provenance, created="")
    return encode(dataclasses.replace(program, provenance=provenance))


def assert_remote_equals_local(
    server: ServerApp, common: list[str], name: str, tmp_path: Path, capsys
) -> None:
    """Convert locally and through the server with the same arguments; compare."""
    local, remote = tmp_path / "local.sfp", tmp_path / "remote.sfp"
    assert main(["convert", *common, "--json", "-o", str(local)]) == 0
    capsys.readouterr()
    address = f"127.0.0.1:{server.port}"
    remote_cli = ["--server", address, "--token", TOKENS["deployer"]]
    assert main([*remote_cli, "convert", *common, "--json", "-o", str(remote)]) == 0
    summary = json.loads(capsys.readouterr().out)

    signed = remote.read_bytes()
    envelope = SignedProgram.from_bytes(signed)
    assert envelope.key_id == server.signing_key.key_id == summary["key_id"]
    program_bytes = verify(signed, TrustedKeys([server.signing_key.public_key]))
    assert envelope.sha256 == summary["sha256"]
    assert without_timestamp(decode(program_bytes)) == without_timestamp(decode(local.read_bytes()))
    assert summary["fidelity"]["samples"] == 32

    viewer = ["--server", address, "--token", TOKENS["viewer"]]
    assert main([*viewer, "programs", "list", "--name", name, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["sha256"] for p in listed] == [summary["sha256"]]
    assert main([*viewer, "programs", "describe", summary["sha256"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fidelity"] == summary["fidelity"]
    fetched = tmp_path / "fetched.sfp"
    assert main([*viewer, "programs", "get", name, "-o", str(fetched)]) == 0
    assert fetched.read_bytes() == signed


@pytest.mark.slow
def test_remote_conversion_equals_local_and_round_trips(
    server: ServerApp, model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    weights, calib = model
    common = [str(weights), "--arch", REFERENCE_ARCH, "--calib", str(calib)]
    assert_remote_equals_local(server, common, "ref", tmp_path, capsys)


@pytest.mark.slow
def test_the_reference_network_bundle_converts_remotely_as_locally(
    server: ServerApp, model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    import torch

    import spikefleet
    from spikefleet.reference.model import ReferenceNet

    torch.manual_seed(0)
    bundle = tmp_path / "reference.safetensors"
    spikefleet.extract(ReferenceNet().eval(), torch.zeros(1, 2, 34, 34), bundle)
    # torch's padding=1 on a stride-2 conv shifts Akida's windows: accepted explicitly
    common = [str(bundle), "--allow-shift", "--calib", str(model[1])]
    assert_remote_equals_local(server, common, "reference", tmp_path, capsys)


def test_remote_conversion_refuses_a_local_signing_key(server: ServerApp, model, tmp_path, capsys):
    weights, _ = model
    remote_cli = ["--server", f"127.0.0.1:{server.port}", "--token", TOKENS["deployer"]]
    args = ["convert", str(weights), "--arch", REFERENCE_ARCH, "-o", str(tmp_path / "x.sfp")]
    assert main([*remote_cli, *args, "--sign-key", str(tmp_path / "k.pem")]) == 1
    assert "the server signs the program: drop --sign-key" in capsys.readouterr().err


def test_remote_conversion_prints_the_fidelity_table(server: ServerApp, model, tmp_path, capsys):
    weights, calib = model
    remote_cli = ["--server", f"127.0.0.1:{server.port}", "--token", TOKENS["deployer"]]
    args = [
        "convert",
        str(weights),
        "--arch",
        REFERENCE_ARCH,
        "--calib",
        str(calib),
        "--name",
        "shown",
    ]
    assert main([*remote_cli, *args, "-o", str(tmp_path / "shown.sfp")]) == 0
    out = capsys.readouterr().out
    assert "converted shown on 127.0.0.1" in out and "signed by" in out
    assert "top-1" in out.lower() or "top1" in out.lower()
    assert re.search(r"note: AKD1000: maps onto \d+ NPs", out)
