"""The input spec's file form: tonic's ToFrame keys and units, plus spikefleet's own keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikefleet.events import (
    Binning,
    CropBox,
    Decision,
    InputSpec,
    InputSpecError,
    Polarity,
    WindowStart,
    default_input_spec,
    load_input_spec,
    parse_input_spec,
)


def test_a_file_with_only_tonic_to_frame_keys_is_a_valid_spec(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(
        "sensor_size = [34, 34, 2]\ntime_window = 100000\nstart_time = 0\n"
        "include_incomplete = false\noverlap = 0\n"
    )
    spec = load_input_spec(path)
    assert spec.binning is Binning.TIME_WINDOW and spec.amount == 100_000
    assert spec.window_start is WindowStart.START_TIME and spec.start_time == 0
    assert spec.polarity is Polarity.SPLIT and spec.input_shape == (34, 34, 2)
    assert spec.clip_bits is None and spec.decision is Decision.SAMPLE_SUM


def test_json_and_toml_forms_round_trip(tmp_path: Path) -> None:
    spec = InputSpec(
        sensor_size=(1280, 720, 2),
        event_count=5000,
        overlap=100,
        include_incomplete=True,
        crop=CropBox(100, 20, 1000, 700),
        downsample=(4, 5),
        polarity=Polarity.MERGED,
        clip_bits=4,
        denoise_filter_time=10_000,
        refractory_delta=0,
        decision=Decision.ROLLING_SUM,
        rolling_frames=8,
        allow_stream_override=True,
    )
    assert parse_input_spec(spec.to_json()) == spec
    assert parse_input_spec(spec.to_toml(), toml=True) == spec
    (tmp_path / "s.json").write_text(spec.to_json())
    assert load_input_spec(tmp_path / "s.json") == spec
    assert spec.frame_size == (250, 140, 1)
    assert spec.input_shape == (140, 250, 1)


def test_center_crop_is_tonics_box() -> None:
    spec = parse_input_spec(
        '{"sensor_size": [346, 260, 2], "time_window": 10000, "center_crop": [241, 200]}'
    )
    # tonic's CenterCrop: offsets (W - w) // 2 and (H - h) // 2
    assert spec.crop == CropBox((346 - 241) // 2, (260 - 200) // 2, 241, 200)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"time_window": 1}', "sensor_size"),
        ('{"sensor_size": [34, 34, 2]}', "exactly one of time_window"),
        ('{"sensor_size": [34, 34, 2], "time_window": 1, "event_count": 3}', "exactly one"),
        ('{"sensor_size": [34, 34, 2], "time_window": 10, "colour": 1}', "unknown key(s) colour"),
        ('{"sensor_size": [34, 34, 3], "time_window": 10}', "polarities must be 1 or 2"),
        ('{"sensor_size": [0, 34, 2], "time_window": 10}', "out of range"),
        ('{"sensor_size": [34, 34, 2], "time_window": -5}', "time_window must be >= 1"),
        ('{"sensor_size": [34, 34, 2], "time_window": 10, "overlap": 10}', "smaller than"),
        ('{"sensor_size": [34, 34, 2], "n_time_bins": 3, "overlap": 1.5}', "must be < 1"),
        ('{"sensor_size": [34, 34, 2], "n_time_bins": 3, "include_incomplete": true}', "not valid"),
        ('{"sensor_size": [34, 34, 2], "event_count": 3, "start_time": 0}', "time_window binning"),
        ('{"sensor_size": [34, 34, 2], "time_window": 9, "crop": [30, 0, 5, 5]}', "does not fit"),
        ('{"sensor_size": [34, 34, 2], "time_window": 9, "center_crop": 40}', "larger than"),
        ('{"sensor_size": [34, 34, 1], "time_window": 9, "polarity": "split"}', "2-polarity"),
        ('{"sensor_size": [34, 34, 2], "time_window": 9, "clip_bits": 9}', "1..8"),
        ('{"sensor_size": [34, 34, 2], "time_window": 9, "decision": "vote"}', "must be one of"),
        ('{"sensor_size": [34, 34, 2], "time_window": 9, "decision": "rolling_sum"}', "K > 0"),
        (
            '{"sensor_size": [34, 34, 2], "time_window": 9, "window_start": "absolute", '
            '"start_time": 5}',
            "drop one",
        ),
        ("[1, 2]", "table/object"),
        ("{nope", "not valid JSON"),
    ],
)
def test_bad_specs_are_refused_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(InputSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_input_spec(text)


def test_an_unreadable_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(InputSpecError, match="cannot read input spec"):
        load_input_spec(tmp_path / "missing.toml")


def test_the_default_spec_for_programs_without_one() -> None:
    spec = default_input_spec((34, 34, 2), 4)
    assert spec.sensor_size == (34, 34, 2) and spec.time_window == 10_000
    assert spec.window_start is WindowStart.FIRST_EVENT and not spec.include_incomplete
    assert spec.clip_bits == 4 and spec.allow_stream_override
    assert default_input_spec((8, 16, 1), 2).polarity is Polarity.MERGED
