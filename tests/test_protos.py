"""The committed gRPC modules are exactly what the .proto files generate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "client" / "spikefleet" / "v1"


def _generate(out_dir: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(out_dir)


def test_every_proto_has_committed_modules_identical_to_a_fresh_generation(tmp_path: Path) -> None:
    _generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "spikefleet" / "v1").iterdir()}
    protos = sorted((ROOT / "protos" / "spikefleet" / "v1").glob("*.proto"))
    assert protos
    for proto in protos:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            name = proto.stem + suffix
            assert name in fresh, f"protoc did not produce {name}"
            committed = COMMITTED / name
            assert committed.exists(), f"{name} is not committed: run scripts/gen_protos.py"
            assert committed.read_bytes() == fresh[name], (
                f"{name} drifted from {proto.name}: run .venv/bin/python scripts/gen_protos.py"
            )


def test_no_committed_module_is_left_without_its_proto() -> None:
    stems = {p.stem for p in (ROOT / "protos" / "spikefleet" / "v1").glob("*.proto")}
    for module in COMMITTED.glob("*_pb2*.py*"):
        stem = module.name.split("_pb2")[0]
        assert stem in stems, f"{module.name} has no protos/spikefleet/v1/{stem}.proto"
