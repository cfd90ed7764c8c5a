"""The CLI against a real server on loopback: tables, JSON, live watch, actions, errors."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog
from rollout_helpers import Agents, Server
from support.backends import sqlite_only
from support.server import TOKENS
from support.simagents import Behaviour
from support.waiting import wait_for

from spikefleet.cli.main import main


@pytest.fixture(autouse=True)
def quiet_server_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The server shares this process: keep its logs out of the CLI's stdout and stderr
    (and give tables room so cells are not wrapped)."""
    monkeypatch.setenv("COLUMNS", "250")
    before = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(io.StringIO()))
    yield
    structlog.configure(**before)


def run(server: Server, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--server", server.address, "--token", TOKENS["deployer"], *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_agents_lists_the_fleet_as_a_table_and_as_json(
    server: Server, agents: Agents, capsys: pytest.CaptureFixture[str]
) -> None:
    agents.start(server, 3, labels={"site": "lab", "tier": "edge"})
    agents.start(server, 1, prefix="dock", labels={"site": "dock"})

    code, out, _ = run(server, capsys, "agents", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [a["agent_id"] for a in listed] == ["dock-00", "edge-00", "edge-01", "edge-02"]
    assert listed[1]["labels"] == {"site": "lab", "tier": "edge"}
    assert listed[1]["program_sha256"] == server.old and listed[1]["connected"] is True

    code, out, _ = run(server, capsys, "agents", "--selector", "site=dock")
    assert code == 0
    assert "dock-00" in out and "edge-00" not in out and server.old[:12] in out


def test_create_and_watch_follows_a_rollout_to_success(
    server: Server, agents: Agents, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = agents.start(server, 4)
    code, out, err = run(
        server, capsys, "rollout", "create", "new", "--selector", "site=lab",
        "--canary", "25%", "--waves", "100%", "--bake", "200ms", "--min-agreement", "0.9",
        "--watch", "--json",
    )  # fmt: skip
    assert code == 0, err
    updates = [json.loads(line) for line in out.splitlines()]
    assert updates[-1]["state"] == "succeeded"
    assert [u["version"] for u in updates] == sorted({u["version"] for u in updates})
    assert {u["stage"] for u in updates} >= {"shadow", "install", "bake"}
    assert all(a.active == server.new for a in fleet)

    rollout_id = updates[-1]["rollout_id"]
    code, out, _ = run(server, capsys, "rollout", "status")
    assert code == 0 and rollout_id in out and "succeeded" in out
    code, out, _ = run(server, capsys, "rollout", "status", rollout_id)
    assert code == 0 and "canary" in out and "1 installed" in out and "3 installed" in out


def test_watch_exits_1_with_the_reason_when_a_rollout_rolls_back(
    server: Server, agents: Agents, capsys: pytest.CaptureFixture[str]
) -> None:
    agents.start(server, 4, behaviour=Behaviour(frames_per_batch=20, agreement={server.bad: 0.5}))
    code, out, _ = run(
        server, capsys, "rollout", "create", server.bad, "--canary", "1", "--bake", "0.2s",
        "--min-agreement", "0.98", "--json",
    )  # fmt: skip
    assert code == 0
    rollout_id = json.loads(out)["rollout_id"]

    code, out, err = run(server, capsys, "rollout", "watch", rollout_id)
    assert code == 1
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith(f"spikefleet rollout: error: rollout {rollout_id} rolled-back: ")
    assert "canary shadow failed agreement 0.5" in last_line


def test_pause_resume_abort_and_manual_rollback(
    server: Server, agents: Agents, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = agents.start(server, 4)
    code, out, _ = run(
        server, capsys, "rollout", "create", server.new, "--canary", "2", "--bake", "1h", "--json"
    )
    rollout_id = json.loads(out)["rollout_id"]
    client = server.client()
    wait_for(lambda: client.get(rollout_id).stage == "bake", "the canary to install and bake")

    code, out, _ = run(
        server, capsys, "rollout", "pause", rollout_id, "--reason", "night", "--json"
    )
    assert code == 0 and json.loads(out)["state"] == "paused"
    code, out, _ = run(server, capsys, "rollout", "resume", rollout_id, "--json")
    assert code == 0 and json.loads(out)["state"] == "running"
    code, out, _ = run(server, capsys, "rollout", "abort", rollout_id, "--json")
    assert code == 0 and json.loads(out)["state"] == "aborted"
    # abort keeps what runs
    assert sorted(a.active == server.new for a in fleet) == [False, False, True, True]

    code, _, err = run(server, capsys, "rollout", "resume", rollout_id)
    assert code == 1 and "only a paused rollout can resume" in err

    code, out, _ = run(server, capsys, "rollout", "rollback", rollout_id, "--reason", "oops")
    assert code == 0 and ("rolling-back" in out or "rolled-back" in out)
    wait_for(lambda: client.get(rollout_id).state == "rolled-back", "the manual rollback")
    assert all(a.active == server.old for a in fleet)
    events = [m for _, m in client.get(rollout_id).events]
    assert "paused: night" in events and "rolling back: oops" in events


@sqlite_only  # the CLI's parsing and messages: the same on both backends
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rollout", "create", "f" * 64], "no program 'ffff"),
        (["rollout", "create", "new", "--canary", "10x"], "canary '10x' is neither"),
        (["rollout", "create", "new", "--waves", "50%,40%"], "must increase strictly"),
        (["rollout", "create", "new", "--bake", "soon"], "duration 'soon' is not like 30s"),
        (["rollout", "create", "new", "--selector", "site"], "selector 'site' is not key=value"),
        (["rollout", "create", "new", "--selector", "site=mars"], "no agent matches the selector"),
        (["rollout", "create", "new", "--min-agreement", "0.9"], "give a canary"),
        (["rollout", "status", "nope"], "no rollout 'nope'"),
        (["rollout", "pause", "nope"], "no rollout 'nope'"),
    ],
)
def test_bad_requests_exit_1_with_one_line_naming_the_problem(
    server: Server,
    agents: Agents,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    agents.start(server, 1)
    code, out, err = run(server, capsys, *argv)
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_a_second_rollout_on_busy_agents_is_refused(
    server: Server, agents: Agents, capsys: pytest.CaptureFixture[str]
) -> None:
    agents.start(server, 2)
    assert run(server, capsys, "rollout", "create", server.new, "--bake", "1h")[0] == 0
    code, _, err = run(server, capsys, "rollout", "create", server.bad)
    assert code == 1 and "already in rollout" in err
