"""`spikefleet data`: build N-DIGITS with progress, inspect recordings, one-line errors."""

from __future__ import annotations

import json

from spikefleet.cli.main import main
from spikefleet.events import make_events, write_nmnist


def test_data_ndigits_builds_and_reports_json(tmp_path, capsys):
    root = tmp_path / "nd"
    assert main(["data", "ndigits", "--root", str(root), "--limit", "12", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 12 and summary["train"] + summary["test"] == 12
    assert summary["root"] == str(root) and (root / "index.json").is_file()


def test_data_inspect_summarizes_an_nmnist_file(tmp_path, capsys):
    path = tmp_path / "rec.bin"
    write_nmnist(path, make_events([1, 30], [2, 20], [10, 900], [True, False]))
    assert main(["data", "inspect", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] == 2 and summary["on"] == 1 and summary["off"] == 1
    assert (summary["t_first_us"], summary["t_last_us"]) == (10, 900)
    assert (summary["width"], summary["height"]) == (31, 21)
    assert main(["data", "inspect", str(path)]) == 0
    assert "rec.bin" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("hello")
    assert main(["data", "inspect", str(tmp_path / "x.txt")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikefleet data: error:") and "\n" not in err
    (tmp_path / "cut.bin").write_bytes(b"\x00" * 7)
    assert main(["data", "inspect", str(tmp_path / "cut.bin")]) == 1
    assert "truncated" in capsys.readouterr().err
    assert main(["data", "ndigits", "--root", str(tmp_path), "--limit", "0"]) == 1
    assert "--limit" in capsys.readouterr().err


def test_data_inspect_reads_aedat4(tmp_path, capsys):
    from spikefleet.events import write_aedat4

    path = tmp_path / "rec.aedat4"
    write_aedat4(path, make_events([5, 6, 7], [1, 1, 1], [100, 200, 300], [True] * 3), 64, 48)
    assert main(["data", "inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 3
