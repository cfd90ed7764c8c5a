"""``spikefleet keygen | sign | verify | inspect``, run as a user would run them."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikefleet.cli.main import main
from spikefleet.events import InputSpec
from spikefleet.program import (
    Activation,
    Convolutional,
    FullyConnected,
    HardwareParts,
    InputData,
    Pooling,
    Program,
    Provenance,
)
from spikefleet.program.files import save_program


def small_program() -> Program:
    rng = np.random.default_rng(7)
    return Program(
        name="tiny",
        layers=[
            InputData("input", (12, 12, 2), 4),
            Convolutional(
                "conv",
                rng.integers(-7, 8, (3, 3, 2, 8)).astype(np.int8),
                rng.integers(-20, 20, 8).astype(np.int32),
                stride=2,
                pooling=Pooling.MAX,
                pool_size=2,
                pool_stride=2,
                activation=Activation(2, np.full(8, 0.5, np.float32)),
            ),
            FullyConnected(
                "head",
                rng.integers(-1, 2, (3 * 3 * 8, 3)).astype(np.int8),
                np.zeros(3, np.int32),
                weights_bits=2,
            ),
        ],
        labels=["left", "right", "still"],
        provenance=Provenance("ab" * 32, "test", "2026-11-27T00:00:00Z", {"agreement": 1.0}),
        hardware=HardwareParts("AKD1000", b"i" * 10, b"d" * 20, 3),
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    save_program(tmp_path / "tiny.sfp", small_program())
    assert main(["keygen", "-o", str(tmp_path / "server.key")]) == 0
    return tmp_path


def signed_file(workdir: Path) -> Path:
    out = workdir / "tiny.signed"
    args = ["sign", str(workdir / "tiny.sfp"), "--key", str(workdir / "server.key")]
    assert main([*args, "-o", str(out)]) == 0
    return out


def test_keygen_writes_a_private_and_a_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "-o", str(tmp_path / "k"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["key_id"]) == 16
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert (tmp_path / "k.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_keygen_refuses_to_overwrite(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (workdir / "server.key").read_bytes()
    assert main(["keygen", "-o", str(workdir / "server.key")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (workdir / "server.key").read_bytes() == before


def test_sign_then_verify_names_the_key(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    signed = signed_file(workdir)
    capsys.readouterr()
    assert (
        main(["verify", str(signed), "--trusted", str(workdir / "server.key.pub"), "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] is True and report["program"] == "tiny"
    assert main(["verify", str(signed), "--trusted", str(workdir)]) == 0
    assert f"signed by trusted key {report['key_id']}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[:-10], "truncated"),
        (lambda data: data[:-10] + bytes([data[-10] ^ 1]) + data[-9:], "tampered"),
        (lambda data: b"junk" + data[4:], "malformed"),
    ],
)
def test_verify_fails_with_one_line_naming_the_reason(
    workdir: Path, capsys: pytest.CaptureFixture[str], damage, reason: str
) -> None:
    signed = signed_file(workdir)
    signed.write_bytes(damage(signed.read_bytes()))
    capsys.readouterr()
    assert main(["verify", str(signed), "--trusted", str(workdir / "server.key.pub")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"spikefleet verify: error: {reason}:")
    assert captured.err.count("\n") == 1


def test_verify_against_another_key_is_unknown_key(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = signed_file(workdir)
    assert main(["keygen", "-o", str(workdir / "other.key")]) == 0
    capsys.readouterr()
    assert main(["verify", str(signed), "--trusted", str(workdir / "other.key.pub")]) == 1
    assert capsys.readouterr().err.startswith("spikefleet verify: error: unknown-key:")


def test_sign_refuses_a_corrupt_program(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "bad.sfp").write_bytes(b"not a program at all")
    capsys.readouterr()
    assert (
        main(
            [
                "sign",
                str(workdir / "bad.sfp"),
                "--key",
                str(workdir / "server.key"),
                "-o",
                str(workdir / "x"),
            ]
        )
        == 1
    )
    assert "file identifier" in capsys.readouterr().err
    assert not (workdir / "x").exists()


def test_inspect_json_describes_the_program(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = signed_file(workdir)
    capsys.readouterr()
    assert main(["inspect", str(signed), "--trusted", str(workdir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["signature"]["status"].startswith("verified")
    assert [layer["output_shape"] for layer in report["layers"]] == [
        [12, 12, 2],
        [3, 3, 8],
        [1, 1, 3],
    ]
    conv = report["layers"][1]
    assert (conv["kernel"], conv["stride"], conv["pooling"], conv["pool_size"]) == (
        [3, 3],
        2,
        "max",
        2,
    )
    assert (
        conv["weights_bits"],
        conv["activation_bits"],
        conv["parameters"],
        conv["weight_bytes"],
    ) == (4, 2, 144, 72)
    head = report["layers"][2]
    assert (head["weights_bits"], head["activation_bits"], head["weight_bytes"]) == (2, None, 54)
    assert report["labels"] == ["left", "right", "still"]
    assert report["output_kind"] == "potentials"
    assert report["provenance"]["fidelity"] == {"agreement": 1.0}
    assert report["hardware"] == {
        "device": "AKD1000",
        "np_count": 3,
        "program_info_bytes": 10,
        "program_data_bytes": 20,
    }
    assert report["fbz_bytes"] is None


def test_inspect_says_when_a_signature_is_unchecked(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = signed_file(workdir)
    capsys.readouterr()
    assert main(["inspect", str(signed)]) == 0
    out = capsys.readouterr().out
    assert "not verified (pass --trusted)" in out
    assert "conv" in out and "3x3 s2 same +max 2/2" in out
    assert main(["inspect", str(workdir / "tiny.sfp")]) == 0
    assert "unsigned" in capsys.readouterr().out


@pytest.mark.slow
def test_real_process_signs_verifies_and_inspects(tmp_path: Path) -> None:
    save_program(tmp_path / "tiny.sfp", small_program())

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spikefleet.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    key = str(tmp_path / "k")
    assert run("keygen", "-o", key).returncode == 0
    assert (
        run("sign", str(tmp_path / "tiny.sfp"), "--key", key, "-o", str(tmp_path / "s")).returncode
        == 0
    )
    ok = run("verify", str(tmp_path / "s"), "--trusted", f"{key}.pub")
    assert ok.returncode == 0 and "verified" in ok.stdout
    (tmp_path / "s").write_bytes((tmp_path / "s").read_bytes()[:50])
    bad = run("verify", str(tmp_path / "s"), "--trusted", f"{key}.pub")
    assert bad.returncode == 1
    assert (
        bad.stderr.startswith("spikefleet verify: error: truncated:")
        and bad.stderr.count("\n") == 1
    )
    shown = run("inspect", str(tmp_path / "tiny.sfp"), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["name"] == "tiny"


def test_every_program_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("keygen", "sign", "verify", "inspect"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        assert "usage: spikefleet" in capsys.readouterr().out


def test_inspect_shows_the_recorded_input_spec_or_the_default(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(workdir / "tiny.sfp"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input_spec"]["recorded"] is False
    assert report["input_spec"]["spec"]["time_window"] == 10_000
    program = small_program()
    program.input_spec = InputSpec(
        sensor_size=(24, 24, 2), time_window=50_000, downsample=2, clip_bits=4
    )
    save_program(workdir / "spec.sfp", program)
    assert main(["inspect", str(workdir / "spec.sfp")]) == 0
    printed = capsys.readouterr().out
    assert "input spec" in printed and "downsample 2x2" in printed
    assert "time_window 50000 us" in printed and "none recorded" not in printed


def test_inspect_says_what_the_recorded_fidelity_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    program = small_program()
    program.provenance = Provenance("ab" * 32, "test", "", {"notes": ["a note", "another"]})
    save_program(tmp_path / "uncalibrated.sfp", program)
    program.provenance = Provenance(
        "ab" * 32, "test", "", {"samples": 40, "top1_agreement": 0.975, "notes": []}
    )
    save_program(tmp_path / "calibrated.sfp", program)
    capsys.readouterr()

    assert main(["inspect", str(tmp_path / "uncalibrated.sfp")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("fidelity"))
    assert "none: converted without calibration data (--calib); holds 2 conversion note" in line
    assert main(["inspect", str(tmp_path / "calibrated.sfp")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("fidelity"))
    assert "measured on 40 sample(s), top-1 agreement 97.50%" in line


def test_cli_errors_name_flags_where_the_library_names_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spikefleet.errors import SignatureError
    from spikefleet.program.files import load_program

    save_program(tmp_path / "p.sfp", small_program())
    assert main(["keygen", "-o", str(tmp_path / "k.key")]) == 0
    signed = tmp_path / "p.signed"
    assert (
        main(["sign", str(tmp_path / "p.sfp"), "--key", str(tmp_path / "k.key"), "-o", str(signed)])
        == 0
    )
    with pytest.raises(SignatureError, match=r"verify=False"):
        load_program(signed)
    np.save(tmp_path / "in.npy", np.zeros((1, 12, 12, 2), np.uint8))
    capsys.readouterr()
    argv = ["run", str(signed), "--frames", str(tmp_path / "in.npy"), "-o", str(tmp_path / "o.npy")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "pass --trusted KEY.pub" in err and "verify=False" not in err
