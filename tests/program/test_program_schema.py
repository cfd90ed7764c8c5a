"""protos/program.fbs is the source of truth: the codec's field numbers follow its
declarations, flatc reads exactly what ``encode`` writes, and ``decode`` reads
exactly what flatc writes from the same schema."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from support.program_factory import assert_programs_equal

from spikefleet.events.spec import CropBox, Decision, InputSpec
from spikefleet.program import (
    Activation,
    Convolutional,
    FullyConnected,
    HardwareParts,
    InputData,
    Padding,
    Pooling,
    Program,
    Provenance,
    codec,
)
from spikefleet.program.packing import pack

SCHEMA = Path(__file__).parents[2] / "protos" / "program.fbs"
FLATC = shutil.which("flatc") or "flatc"  # `make setup` installs flatbuffers-compiler


def schema_tables() -> dict[str, list[str]]:
    """Each table's fields in slot order; a union field takes two slots (type, value)."""
    text = re.sub(r"//[^\n]*", "", SCHEMA.read_text())
    unions = set(re.findall(r"\bunion\s+(\w+)", text))
    tables: dict[str, list[str]] = {}
    for name, body in re.findall(r"\btable\s+(\w+)\s*\{([^}]*)\}", text):
        fields: list[str] = []
        for field, kind in re.findall(r"(\w+)\s*:\s*([\w\[\]]+)", body):
            if kind in unions:
                fields.append(f"{field}_type")
            fields.append(field)
        tables[name] = fields
    return tables


def test_codec_slots_follow_the_schema() -> None:
    tables = schema_tables()
    assert set(tables) == set(codec._NUM_FIELDS)
    for name, fields in tables.items():
        slots = vars(getattr(codec._Slots, name))
        by_slot = {value: key for key, value in slots.items() if isinstance(value, int)}
        assert [by_slot.get(i) for i in range(len(fields))] == fields, name
        assert codec._NUM_FIELDS[name] == len(fields), name


def exact_program() -> Program:
    """Float values that print exactly, so JSON comparisons are exact."""
    rng = np.random.default_rng(5)
    return Program(
        name="schema-check",
        layers=[
            InputData("input", (9, 10, 2), 2),
            Convolutional(
                "conv",
                rng.integers(-7, 8, (3, 3, 2, 5)).astype(np.int8),
                np.array([-3, 0, 5, 2**31 - 1, -(2**31)], np.int32),
                weights_bits=4,
                stride=2,
                padding=Padding.VALID,
                pooling=Pooling.MAX,
                pool_size=2,
                pool_stride=1,
                activation=Activation(2, np.array([0.5, 1.0, 1.5, 2.25, 8.0], np.float32)),
            ),
            Convolutional(
                "gap",
                rng.integers(-1, 2, (1, 1, 5, 4)).astype(np.int8),
                np.arange(4, dtype=np.int32),
                weights_bits=2,
                pooling=Pooling.GLOBAL_AVERAGE,
                activation=Activation(1, np.ones(4, np.float32)),
            ),
            FullyConnected(
                "fc", rng.integers(0, 2, (4, 3)).astype(np.int8), np.array([1, 2, 3], np.int32), 1
            ),
        ],
        labels=["a", "b", "ç"],
        output_scales=np.array([0.125, 0.25, 4.0], np.float32),
        provenance=Provenance("ff" * 32, "v9", "2026-11-27T00:00:00Z", {"k": [1, 2]}),
        hardware=HardwareParts("AKD1000", b"\x00\x01\x02", b"\xff" * 5, 7),
        fbz=b"\x10\x20",
        input_spec=InputSpec(
            sensor_size=(24, 20, 2),
            time_window=5000,
            overlap=100,
            include_incomplete=True,
            start_time=-3,
            end_time=99_999,
            crop=CropBox(1, 2, 20, 18),
            downsample=(2, 2),
            clip_bits=2,
            denoise_filter_time=1000,
            refractory_delta=0,
            decision=Decision.ROLLING_SUM,
            rolling_frames=3,
            allow_stream_override=True,
        ),
    )


def weights_json(layer: Convolutional | FullyConnected) -> dict[str, Any]:
    return {
        "bits": layer.weights_bits,
        "shape": list(layer.weights.shape),
        "data": list(pack(layer.weights, layer.weights_bits)),
    }


def activation_json(activation: Activation | None) -> dict[str, Any]:
    if activation is None:
        return {}
    return {"activation": {"bits": activation.bits, "step": activation.step.tolist()}}


def expected_json(program: Program) -> dict[str, Any]:
    """The program as flatc prints it from the schema, all defaults included."""
    layers = []
    for layer in program.layers:
        if isinstance(layer, InputData):
            kind = "InputLayer"
            height, width, channels = layer.shape
            body = {"height": height, "width": width, "channels": channels, "bits": layer.bits}
        elif isinstance(layer, Convolutional):
            kind = "ConvLayer"
            body = {
                "weights": weights_json(layer),
                "threshold": layer.threshold.tolist(),
                "stride": layer.stride,
                "padding": layer.padding.name,
                "pooling": layer.pooling.name,
                "pool_size": layer.pool_size,
                "pool_stride": layer.pool_stride,
                **activation_json(layer.activation),
            }
        else:
            kind = "DenseLayer"
            body = {
                "weights": weights_json(layer),
                "threshold": layer.threshold.tolist(),
                **activation_json(layer.activation),
            }
        layers.append({"name": layer.name, "body_type": kind, "body": body})
    assert program.output_scales is not None and program.hardware is not None
    assert program.fbz is not None
    return {
        "format_version": codec.FORMAT_VERSION,
        "name": program.name,
        "layers": layers,
        "labels": program.labels,
        "output_scales": program.output_scales.tolist(),
        "provenance": {
            "source_sha256": program.provenance.source_sha256,
            "converter_version": program.provenance.converter_version,
            "created": program.provenance.created,
            "fidelity_json": json.dumps(program.provenance.fidelity, sort_keys=True),
        },
        "hardware": {
            "device": program.hardware.device,
            "program_info": list(program.hardware.program_info),
            "program_data": list(program.hardware.program_data),
            "np_count": program.hardware.np_count,
        },
        "fbz": list(program.fbz),
        "input_spec": spec_json(program.input_spec),
    }


def spec_json(spec: InputSpec | None) -> dict[str, Any]:
    assert spec is not None and spec.crop is not None
    assert spec.window_start is not None and spec.polarity is not None
    return {
        "sensor_width": spec.sensor_size[0],
        "sensor_height": spec.sensor_size[1],
        "sensor_polarities": spec.sensor_size[2],
        "binning": spec.binning.name,
        "amount": spec.amount,
        "overlap": float(spec.overlap),
        "include_incomplete": spec.include_incomplete,
        "window_start": spec.window_start.name,
        "start_time": spec.start_time,
        "end_time": spec.end_time,
        "has_end_time": spec.end_time is not None,
        "crop_x": spec.crop.x,
        "crop_y": spec.crop.y,
        "crop_width": spec.crop.width,
        "crop_height": spec.crop.height,
        "downsample_x": spec.downsample[0],
        "downsample_y": spec.downsample[1],
        "polarity": spec.polarity.name,
        "clip_bits": spec.clip_bits,
        "denoise_filter_time": spec.denoise_filter_time,
        "refractory_delta": spec.refractory_delta,
        "decision": spec.decision.name,
        "rolling_frames": spec.rolling_frames,
        "allow_stream_override": spec.allow_stream_override,
    }


def test_flatc_reads_what_encode_writes(tmp_path: Path) -> None:
    program = exact_program()
    (tmp_path / "p.sfp").write_bytes(codec.encode(program))
    subprocess.run(
        [
            FLATC,
            "--json",
            "--strict-json",
            "--raw-binary",
            "--defaults-json",
            "--natural-utf8",
            "-o",
            str(tmp_path),
            str(SCHEMA),
            "--",
            str(tmp_path / "p.sfp"),
        ],
        check=True,
    )
    assert json.loads((tmp_path / "p.json").read_text()) == expected_json(program)


def test_decode_reads_what_flatc_writes(tmp_path: Path) -> None:
    program = exact_program()
    (tmp_path / "p.json").write_text(json.dumps(expected_json(program)))
    subprocess.run(
        [FLATC, "--binary", "-o", str(tmp_path), str(SCHEMA), str(tmp_path / "p.json")], check=True
    )
    data = (tmp_path / "p.sfp").read_bytes()
    assert data[4:8] == codec.FILE_IDENTIFIER
    assert_programs_equal(codec.decode(data), program)
