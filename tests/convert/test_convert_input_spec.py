"""Conversion records how events become the model's frames: given, from the bundle, or the
default with a note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from convert_models import RefLikeNet, random_frames, to_input

import spikefleet
from spikefleet.cli.main import main
from spikefleet.convert import ConvertOptions, convert, load_bundle
from spikefleet.errors import ConversionError
from spikefleet.events import InputSpec, WindowStart
from spikefleet.program.files import load_program

SPEC = InputSpec(sensor_size=(34, 34, 2), time_window=100_000, start_time=0)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("spec")
    model = RefLikeNet()
    sample = to_input(random_frames(1, seed=1))
    plain, with_spec = root / "plain.safetensors", root / "spec.safetensors"
    spikefleet.extract(model, sample, plain)
    spikefleet.extract(model, sample, with_spec, input_spec=SPEC)
    return {"plain": plain, "spec": with_spec, "root": root}


def test_extract_carries_the_spec_in_the_bundle(bundles: dict[str, Path]) -> None:
    assert load_bundle(bundles["spec"]).input_spec == SPEC
    assert load_bundle(bundles["plain"]).input_spec is None


def test_convert_records_the_bundles_spec_clipped_to_the_input_bits(
    bundles: dict[str, Path],
) -> None:
    result = convert(bundles["spec"], options=ConvertOptions(hardware=False))
    assert result.program.input_spec == SPEC.with_clip_bits(4)
    assert not any("input spec" in note for note in result.notes)


def test_without_a_spec_the_default_is_recorded_with_a_note(bundles: dict[str, Path]) -> None:
    result = convert(bundles["plain"], options=ConvertOptions(hardware=False))
    spec = result.program.input_spec
    assert spec is not None and spec.window_start is WindowStart.FIRST_EVENT
    assert any(note.startswith("no input spec given") for note in result.notes)


def test_a_spec_that_makes_other_frames_is_refused(bundles: dict[str, Path]) -> None:
    wrong = InputSpec(sensor_size=(68, 68, 2), time_window=1000)
    with pytest.raises(ConversionError, match=r"makes frames of \(68, 68, 2\)"):
        convert(bundles["plain"], options=ConvertOptions(hardware=False, input_spec=wrong))


def test_cli_input_spec_file_is_recorded(
    bundles: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text("sensor_size = [68, 68, 2]\ntime_window = 20000\ndownsample = 2\n")
    out = tmp_path / "p.sfp"
    args = ["convert", str(bundles["plain"]), "-o", str(out), "--no-hardware"]
    assert main([*args, "--input-spec", str(spec_file)]) == 0
    spec = load_program(out).input_spec
    assert spec is not None and spec.downsample == (2, 2) and spec.time_window == 20_000
    assert "no input spec given" not in capsys.readouterr().out
    spec_file.write_text("sensor_size = [34, 34, 2]\ntime_windw = 20000\n")
    assert main([*args, "--input-spec", str(spec_file)]) == 1
    err = capsys.readouterr().err
    assert "unknown key(s) time_windw" in err and len(err.strip().splitlines()) == 1


def test_calibration_recordings_are_binned_by_the_input_spec(tmp_path: Path) -> None:
    from support.events import recording

    from spikefleet.convert.calibration import load_calibration
    from spikefleet.events import write_nmnist
    from spikefleet.events.binning import spec_frames

    rng = np.random.default_rng(4)
    for label in (0, 1):
        (tmp_path / str(label)).mkdir()
        for i in range(3):
            write_nmnist(
                tmp_path / str(label) / f"{i}.bin", recording(rng, (34, 34), 800 + 150 * i, 290_000)
            )
    spec = InputSpec(
        sensor_size=(34, 34, 2), time_window=50_000, start_time=0, end_time=300_000, clip_bits=4
    )
    frames, labels = load_calibration(tmp_path, input_spec=spec)
    assert (
        frames.shape == (6, 6, 34, 34, 2)
        and labels is not None
        and list(labels) == [0] * 3 + [1] * 3
    )
    first = sorted((tmp_path / "0").glob("*.bin"))[0]
    from spikefleet.events import read_nmnist

    np.testing.assert_array_equal(frames[0], spec_frames(read_nmnist(first), spec))
    with pytest.raises(ConversionError, match="the same number for each"):
        load_calibration(tmp_path, input_spec=InputSpec(sensor_size=(34, 34, 2), event_count=97))
