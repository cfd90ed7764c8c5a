"""How commands show results: a table for people, JSON for tools, progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    ids: Collection[str] = (),
) -> None:
    """``ids`` name the columns holding identifiers people paste into other commands:
    those are never cut short or wrapped (the other columns wrap to make room)."""
    table = Table(title=title)
    for column in columns:
        if column in ids:
            table.add_column(column, no_wrap=True, overflow="ignore")
        else:
            table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console().print(table)


def print_fields(rows: Sequence[tuple[str, Any]]) -> None:
    """``field: value`` lines: long values (a sha256) stay whole at any width."""
    width = max((len(label) for label, _ in rows), default=0) + 2
    for label, value in rows:
        print(f"{label + ':':<{width}}{value}")


@contextmanager
def progress(description: str, total: float | None = None) -> Iterator[Any]:
    """A progress bar on stderr while the work runs; yields ``advance(amount, description=None)``.

    It is erased when done (the result follows on stdout), and a stderr that is not a
    terminal gets none: a log has no use for a bar's redraws."""
    console = Console(stderr=True)
    if not console.is_terminal:

        def ignore(amount: float = 1, description: str | None = None) -> None:
            del amount, description

        yield ignore
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total)

        def advance(amount: float = 1, description: str | None = None) -> None:
            if description is None:
                bar.advance(task, amount)
            else:
                bar.update(task, advance=amount, description=description)

        yield advance
