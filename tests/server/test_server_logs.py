"""spikefleet-server's log format: JSON lines for collectors, console text for people."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from server_process import SERVER
from support.terminal import TerminalProcess


def serve(data_dir: Path, *extra: str) -> list[str]:
    return [
        SERVER, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
        "--insecure-loopback", *extra,
    ]  # fmt: skip


def test_on_a_terminal_the_log_is_readable_text(tmp_path: Path) -> None:
    with TerminalProcess(serve(tmp_path / "data")) as server:
        line = server.wait_for("keys.created")
        server.wait_for("listening on port")
    assert not line.lstrip().startswith("{")
    assert "[info" in line and "key_id=" in line


def test_log_format_json_is_json_even_on_a_terminal(tmp_path: Path) -> None:
    with TerminalProcess(serve(tmp_path / "data", "--log-format", "json")) as server:
        line = server.wait_for("keys.created")
    record = json.loads(line)
    assert record["event"] == "keys.created" and record["level"] == "info"


def test_without_a_terminal_the_log_is_json_lines_and_console_on_request(
    tmp_path: Path,
) -> None:
    for extra, is_json in (((), True), (("--log-format", "console"), False)):
        process = subprocess.Popen(
            serve(tmp_path / f"data{len(extra)}", *extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stderr is not None
            line = next(line for line in process.stderr if "keys.created" in line)
        finally:
            process.terminate()
            process.wait(timeout=60)
        assert line.startswith("{") is is_json, line
