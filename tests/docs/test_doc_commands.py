"""The user docs show only commands, flags and Python names that exist.

Every ``spikefleet``, ``spikefleet-server`` and ``spikefleet-agent`` command
line in the docs' ``sh``/``console`` blocks is parsed by the real argparse
parser; Python blocks compile and the spikefleet names they import exist;
TOML blocks load through the agent's real config parser; links to other pages
resolve.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from spikefleet.cli.main import build_parser as client_parser
from spikefleet_agent.cli import build_parser as agent_parser
from spikefleet_agent.config import parse_config as parse_agent_config
from spikefleet_server.cli import build_parser as server_parser

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "spikefleet": client_parser,
    "spikefleet-server": server_parser,
    "spikefleet-agent": agent_parser,
}
REQUIRED_PAGES = [
    "index.md",
    "quickstart.md",
    "converting.md",
    "server.md",
    "agents.md",
    "rollouts.md",
    "telemetry.md",
    "program-format.md",
    "brainchip.md",
    "training-to-edge.md",
    "security.md",
]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SEPARATORS = {"|", "||", "&&", ";", "&"}
REDIRECTS = {">", ">>", "<", ">&"}


@dataclass(frozen=True)
class Snippet:
    page: str
    language: str
    text: str


def snippets(language: str | set[str]) -> list[Snippet]:
    wanted = {language} if isinstance(language, str) else language
    found = []
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text()):
            if lang in wanted:
                found.append(Snippet(page.name, lang, body))
    return found


def shell_lines(snippet: Snippet) -> list[str]:
    """Logical command lines: continuations joined, console prompts kept, comments dropped."""
    text = snippet.text.replace("\\\n", " ")
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if snippet.language == "console":
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line, with redirections removed."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    parts: list[list[str]] = [[]]
    skip_next = False
    for token in lexer:
        if skip_next:
            skip_next = False
        elif token in SEPARATORS:
            parts.append([])
        elif token in REDIRECTS:
            if parts[-1] and parts[-1][-1] in {"1", "2"}:
                parts[-1].pop()  # the descriptor of "2> file"
            skip_next = True
        else:
            parts[-1].append(token)
    return [p for p in parts if p]


def spikefleet_commands() -> list[tuple[str, list[str]]]:
    found = []
    for snippet in snippets({"sh", "console"}):
        for line in shell_lines(snippet):
            for argv in commands(line):
                if argv[0] in PARSERS:
                    found.append((snippet.page, argv))
    return found


def check_command(argv: list[str]) -> argparse.Namespace:
    """Parse with the real parser; a missing subcommand, flag or argument fails."""
    parser = PARSERS[argv[0]]()
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as exc:
        raise AssertionError(f"{shlex.join(argv)!r} does not parse (exit {exc.code})") from None
    if getattr(args, "func", None) is None:
        raise AssertionError(f"{shlex.join(argv)!r} names no runnable subcommand")
    return args


COMMANDS = spikefleet_commands()


def test_every_required_page_exists() -> None:
    assert [p for p in REQUIRED_PAGES if not (DOCS / p).is_file()] == []


def test_the_docs_show_commands_of_all_three_programs() -> None:
    programs = {argv[0] for _, argv in COMMANDS}
    assert programs == set(PARSERS)
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize(
    ("page", "argv"), COMMANDS, ids=[f"{p}:{' '.join(a[:3])}" for p, a in COMMANDS]
)
def test_doc_command_parses(page: str, argv: list[str]) -> None:
    check_command(argv)


def test_a_made_up_flag_or_subcommand_is_caught() -> None:
    for argv in (
        ["spikefleet", "convert", "model.pt", "-o", "x.sfp", "--no-such-flag"],
        ["spikefleet-server", "launch"],
        ["spikefleet-agent", "run"],  # --config is required
        ["spikefleet", "programs"],  # no action
    ):
        with pytest.raises(AssertionError):
            check_command(argv)


def test_redirections_and_substitutions_are_not_taken_for_arguments() -> None:
    (argv,) = commands("spikefleet-server token create --name me --role admin > a.token 2> s.toml")
    assert argv == [
        "spikefleet-server",
        "token",
        "create",
        "--name",
        "me",
        "--role",
        "admin",
    ]
    (argv,) = commands('spikefleet --token "$(cat admin.token)" agents')
    assert argv == ["spikefleet", "--token", "$(cat admin.token)", "agents"]


PYTHON = snippets("python")


@pytest.mark.parametrize("snippet", PYTHON, ids=[f"{s.page}:{i}" for i, s in enumerate(PYTHON)])
def test_python_snippet_compiles_and_its_spikefleet_names_exist(snippet: Snippet) -> None:
    tree = ast.parse(snippet.text, filename=snippet.page)
    compile(tree, snippet.page, "exec")
    modules: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spikefleet"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                if not hasattr(module, alias.name):
                    importlib.import_module(f"{node.module}.{alias.name}")  # a submodule
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("spikefleet"):
                    importlib.import_module(alias.name)
                    modules[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            module = importlib.import_module(modules[node.value.id])
            assert hasattr(module, node.attr), f"{modules[node.value.id]} has no {node.attr}"


def test_python_snippets_exist() -> None:
    assert len(PYTHON) >= 5


@pytest.mark.parametrize(
    "snippet", snippets("toml"), ids=lambda s: s.page if isinstance(s, Snippet) else ""
)
def test_agent_toml_snippet_loads(snippet: Snippet, tmp_path: Path) -> None:
    data = tomllib.loads(snippet.text)
    assert "agent_id" in data, "only agent configs are shown as TOML blocks"
    parse_agent_config(data, tmp_path)


LINK = re.compile(r"\]\(([^)#\s]+\.md)(#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_between_pages_resolve(page: Path) -> None:
    for target, _anchor in LINK.findall(page.read_text()):
        assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"
