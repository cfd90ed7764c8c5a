"""What a table shows, a command accepts: names, name@version and unique prefixes of
sha256s, rollout ids and agent ids, through the real CLI at 80 columns."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from rollout_helpers import Agents, Server, final
from support.server import TOKENS, put_programs, running_app
from support.waiting import wait_for

from spikefleet.cli.main import main
from spikefleet.errors import AmbiguousReferenceError


@pytest.fixture(autouse=True)
def narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An 80-column terminal, and the in-process server's logs kept out of the output."""
    monkeypatch.setenv("COLUMNS", "80")
    before = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(io.StringIO()))
    yield
    structlog.configure(**before)


def run(
    server: Server, capsys: pytest.CaptureFixture[str], *argv: str, role: str = "deployer"
) -> tuple[int, str, str]:
    code = main(["--server", server.address, "--token", TOKENS[role], *argv])
    out, err = capsys.readouterr()
    return code, out, err


def cells(table: str, column: int) -> list[str]:
    """The non-empty cells of one column of a rich table's body (drawn with │)."""
    rows = [line.split("│")[1:-1] for line in table.splitlines() if line.count("│") > 2]
    return [row[column].strip() for row in rows if row[column].strip()]


def test_agent_assign_takes_a_program_name_or_short_prefix_and_an_agent_prefix(
    server: Server, agents: Agents, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = agents.start(server, 2)
    fleet += agents.start(server, 1, prefix="dock")

    code, out, err = run(server, capsys, "agent", "assign", "edge-01", "new", role="admin")
    assert code == 0, err
    assert server.new in out
    wait_for(lambda: fleet[1].active == server.new, "edge-01 to install 'new' by name")

    code, out, err = run(server, capsys, "agent", "assign", "dock", server.bad[:12], role="admin")
    assert code == 0, err
    wait_for(lambda: fleet[2].active == server.bad, "dock-00 to install by 12-digit prefix")

    code, out, err = run(server, capsys, "agent", "assign", "edge-0", "old", role="admin")
    assert code == 1 and out == ""
    (line,) = err.splitlines()
    assert "ambiguous" in line and "edge-00" in line and "edge-01" in line


def test_rollout_ids_shown_at_80_columns_are_whole_and_prefixes_work(
    server: Server, agents: Agents, capsys: pytest.CaptureFixture[str]
) -> None:
    agents.start(server, 2)
    code, out, err = run(server, capsys, "rollout", "create", "new@1", "--bake", "0", "--json")
    assert code == 0, err
    rollout_id = json.loads(out)["rollout_id"]
    assert final(server.client(), rollout_id[:6]).state == "succeeded"

    code, out, _ = run(server, capsys, "rollout", "status")
    assert code == 0
    assert cells(out, 0) == [rollout_id]
    (shown_program,) = cells(out, 1)
    assert server.new.startswith(shown_program)

    code, out, err = run(server, capsys, "rollout", "status", rollout_id[:5], "--json")
    assert code == 0, err
    assert json.loads(out)["rollout_id"] == rollout_id

    code, out, err = run(server, capsys, "rollout", "create", shown_program, "--bake", "0")
    assert code == 0, err
    second = re.search(r"rollout (\w+) started", out)
    assert second is not None
    final(server.client(), second.group(1))
    code, out, err = run(server, capsys, "rollout", "pause", "zz")
    assert code == 1 and "no rollout 'zz'" in err


def test_agents_table_at_80_columns_shows_whole_ids(
    server: Server, agents: Agents, capsys: pytest.CaptureFixture[str]
) -> None:
    agents.start(server, 1, prefix="warehouse-north-dock", labels={"site": "lab", "tier": "edge"})
    code, out, _ = run(server, capsys, "agents")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    assert cells(out, 0) == ["warehouse-north-dock-00"]
    assert server.old.startswith(cells(out, 3)[0])


def test_programs_accept_what_their_table_shows_names_versions_and_prefixes(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(server, capsys, "programs", "list")
    assert code == 0
    assert sorted(cells(out, 0)) == ["bad", "new", "old"]
    for shown in cells(out, 2):
        code, described, err = run(server, capsys, "programs", "describe", shown, "--json")
        assert code == 0, err
        assert json.loads(described)["sha256"].startswith(shown)

    code, out, err = run(server, capsys, "programs", "describe", "new@1")
    assert code == 0, err
    assert server.new in out  # the whole sha256, on one line, at 80 columns

    code, out, err = run(server, capsys, "programs", "describe", "new@7")
    assert code == 1 and "has no version 7 (it has 1)" in err


def test_a_reference_fitting_two_programs_lists_both(
    tmp_path: Path, database_target: str | Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_app(tmp_path / "server", database_target) as app:
        first = put_programs(app, {"first": 11})["first"]
        clash = put_programs(app, {first[:6]: 12})[first[:6]]  # a name that is a prefix
        server = Server(app.port, {})
        code, out, err = run(server, capsys, "programs", "describe", first[:6])
        assert code == 1 and out == ""
        (line,) = err.splitlines()
        assert "ambiguous" in line
        assert f"first@1 ({first[:12]})" in line and f"{first[:6]}@1 ({clash[:12]})" in line
        code, out, err = run(server, capsys, "programs", "describe", "first@1", "--json")
        assert code == 0 and json.loads(out)["sha256"] == first


def test_the_client_lists_agents_and_assigns_by_any_name(server: Server, agents: Agents) -> None:
    from spikefleet import Client

    fleet = agents.start(server, 2, prefix="lab")
    with Client(server.address, token=TOKENS["admin"]) as client:
        assert [a.agent_id for a in client.agents({"site": "lab"})] == ["lab-00", "lab-01"]
        assert client.resolve_agent("lab-01") == "lab-01"
        done = client.assign("lab-01", "new@1")
        assert (done.agent_id, done.sha256, done.connected) == ("lab-01", server.new, True)
        with pytest.raises(AmbiguousReferenceError) as info:
            client.assign("lab", "new")
        assert info.value.candidates == ["lab-00", "lab-01"]
    wait_for(lambda: fleet[1].active == server.new, "lab-01 to install its assignment")
