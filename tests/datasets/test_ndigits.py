"""N-DIGITS: recorded from sklearn's digits, reproducible to the byte, checked on load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from spikefleet.datasets import ndigits
from spikefleet.errors import DatasetError, EventFormatError
from spikefleet.events import make_events, read_nmnist
from spikefleet.events.binning import spec_frames

SUBSET = 30


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    return ndigits.build(tmp_path_factory.mktemp("ndigits"), limit=SUBSET)


def hashes(root) -> dict[str, str]:
    return {e["file"]: e["sha256"] for e in ndigits.read_index(root)["samples"]}


def test_rebuilding_from_the_seed_gives_identical_files(subset, tmp_path):
    again = ndigits.build(tmp_path / "again", limit=SUBSET)
    assert hashes(again) == hashes(subset)
    assert len(hashes(subset)) == SUBSET
    other = ndigits.build(tmp_path / "other", seed=1, limit=SUBSET)
    assert set(hashes(other).values()).isdisjoint(hashes(subset).values())


def test_samples_carry_sklearns_labels_and_valid_recordings(subset):
    labels = load_digits().target
    index = ndigits.read_index(subset)
    for entry in index["samples"]:
        number = int(entry["file"].split("/")[1].removesuffix(".bin"))
        assert entry["label"] == labels[number]
        assert entry["file"].startswith(entry["split"] + "/")
    samples = ndigits.load(subset, "train") + ndigits.load(subset, "test")
    assert len(samples) == SUBSET
    for events, label in samples:
        assert 0 <= label <= 9
        assert 300 < len(events) < 20000
        assert events["t"].max() < 300_000


def test_the_split_is_fixed_stratified_and_disjoint():
    labels = load_digits().target
    split = ndigits.split_indices(labels)
    assert set(split["train"]).isdisjoint(split["test"])
    assert len(split["train"]) + len(split["test"]) == ndigits.SIZE
    for digit in range(10):
        members = (labels == digit).sum()
        assert (labels[split["test"]] == digit).sum() == round(members * ndigits.TEST_FRACTION)
    np.testing.assert_array_equal(ndigits.split_indices(labels)["test"], split["test"])


def test_load_refuses_tampered_or_missing_files(subset, tmp_path):
    copy = ndigits.build(tmp_path / "copy", limit=4)
    entry = ndigits.read_index(copy)["samples"][0]
    path = copy / entry["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="sha256"):
        ndigits.load(copy, entry["split"])
    path.unlink()
    with pytest.raises(DatasetError, match="missing"):
        ndigits.load(copy, entry["split"])
    with pytest.raises(DatasetError, match="spikefleet data ndigits"):
        ndigits.load(tmp_path / "nothing")
    with pytest.raises(DatasetError, match="unknown split"):
        ndigits.load(subset, "validation")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.json").write_text(json.dumps({"name": "other"}))
    with pytest.raises(DatasetError, match="not an N-DIGITS"):
        ndigits.load(tmp_path / "bad")


def test_default_root_follows_spikefleet_data(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEFLEET_DATA", str(tmp_path))
    assert ndigits.default_root() == tmp_path / "ndigits"


def test_sample_frames_is_one_4bit_frame_per_saccade(subset):
    events = read_nmnist(subset / ndigits.read_index(subset)["samples"][0]["file"])
    frames = ndigits.sample_frames(events)
    assert frames.shape == (3, 34, 34, 2) and frames.dtype == np.uint8
    assert frames.max() <= 15
    assert int(frames.sum()) == len(events)  # emulated counts never reach the clip
    for k in range(3):
        in_window = (events["t"] // 100_000) == k
        assert int(frames[k].sum()) == int(in_window.sum())


def test_sample_frames_clips_and_drops_events_after_the_third_saccade():
    events = make_events(
        [1] * 20 + [2, 3], [1] * 20 + [2, 3], [5] * 20 + [299_999, 300_000], [True] * 22
    )
    frames = ndigits.sample_frames(events)
    assert frames[0, 1, 1, 1] == 15 and frames[2, 2, 2, 1] == 1 and frames[:, 3, 3].sum() == 0
    np.testing.assert_array_equal(frames, spec_frames(events, ndigits.INPUT_SPEC))
    with pytest.raises(EventFormatError, match="outside"):
        ndigits.sample_frames(make_events([34], [0], [0], [True]))


def test_predict_sample_sums_the_frames_scores():
    scores = np.array([[5, 0, 0] + [0] * 7, [0, 3, 0] + [0] * 7, [0, 3, 0] + [0] * 7])
    assert ndigits.predict_sample(scores) == 1
