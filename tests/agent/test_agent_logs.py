"""spikefleet-agent's log format: console text on a terminal, JSON when asked (and when
stderr is a file or pipe, which the fleet tests read)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from support.agent import make_key
from support.terminal import TerminalProcess

AGENT = str(Path(sys.executable).parent / "spikefleet-agent")


def agent_config(root: Path) -> Path:
    make_key(root / "keys")
    config = root / "agent.toml"
    config.write_text(
        'agent_id = "log-test"\nstate_dir = "state"\nlock_dir = "lock"\ntrusted_keys = ["keys"]\n'
        '[server]\naddress = "127.0.0.1:9"\n[inference]\naddress = "127.0.0.1:0"\n'
    )
    return config


def test_on_a_terminal_the_agent_logs_readable_text(tmp_path: Path) -> None:
    with TerminalProcess([AGENT, "run", "--config", str(agent_config(tmp_path))]) as agent:
        line = agent.wait_for("agent.listening")
    assert not line.lstrip().startswith("{") and "inference_port=" in line


def test_log_format_json_gives_json_lines(tmp_path: Path) -> None:
    argv = [AGENT, "run", "--config", str(agent_config(tmp_path)), "--log-format", "json"]
    with TerminalProcess(argv) as agent:
        line = agent.wait_for("agent.listening")
    record = json.loads(line)
    assert record["event"] == "agent.listening" and record["inference_port"] > 0
