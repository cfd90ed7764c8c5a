"""One way to name things: whatever a table shows, every command accepts.

Programs are named by ``name`` (its latest version), ``name@version``, a full
sha256 or a unique sha256 prefix; rollouts and agents by their id or a unique
prefix of it. Resolution runs on the client over the List calls, so every server
version understands the result (a full sha256 or id). A reference that fits
several things raises :class:`AmbiguousReferenceError` listing them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from spikefleet.errors import AmbiguousReferenceError, NotFoundError, SpikefleetError

MIN_PREFIX = 4
"""Shortest prefix accepted: fewer digits would match by accident more often than not."""

CANDIDATES_SHOWN = 8

_HEX = re.compile(r"^[0-9a-f]+$")


class _ProgramLike(Protocol):
    @property
    def sha256(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...


P = TypeVar("P", bound=_ProgramLike)
T = TypeVar("T")


def is_sha256(text: str) -> bool:
    return len(text) == 64 and _HEX.match(text.lower()) is not None


def split_version(ref: str) -> tuple[str, int | None]:
    """``"digits@3"`` (or ``digits@v3``) -> ("digits", 3); anything else -> (ref, None)."""
    name, sep, version = ref.rpartition("@")
    if not sep or not name:
        return ref, None
    digits = version[1:] if version[:1] in ("v", "V") else version
    if not digits.isdigit():
        raise SpikefleetError(
            f"{ref!r}: the part after '@' must be a version number, as in {name}@2"
        )
    return name, int(digits)


def program_label(program: _ProgramLike) -> str:
    """How candidates are listed: what one would paste to pick each."""
    return f"{program.name}@{program.version} ({program.sha256[:12]})"


def resolve_program(
    ref: str, programs: Sequence[P], version: int | None = None, *, what: str = "program"
) -> P:
    """The one program among ``programs`` that ``ref`` (and ``version``) names."""
    ref = ref.strip()
    if not ref:
        raise SpikefleetError(f"no {what} given: pass a name, name@version or sha256 (prefix)")
    name, at_version = split_version(ref)
    if at_version is not None:
        if version is not None and version != at_version:
            raise SpikefleetError(f"{ref!r} names version {at_version}, but {version} was asked")
        version = at_version
    if version is not None:
        exact = [p for p in programs if p.name == name and p.version == version]
        if exact:
            return exact[0]
        versions = sorted(p.version for p in programs if p.name == name)
        if versions:
            raise NotFoundError(
                f"{what} {name!r} has no version {version} (it has "
                f"{', '.join(map(str, versions))})",
                "NOT_FOUND",
            )
        raise _not_found(what, ref)
    named = [p for p in programs if p.name == ref]
    latest = [max(named, key=lambda p: p.version)] if named else []
    lowered = ref.lower()
    by_sha: list[P] = []
    if len(ref) >= MIN_PREFIX and _HEX.match(lowered):
        by_sha = [p for p in programs if p.sha256.startswith(lowered)]
    found = _unique(latest + by_sha, key=lambda p: p.sha256)
    if len(found) == 1:
        return found[0]
    if not found:
        if _HEX.match(lowered) and len(ref) < MIN_PREFIX:
            raise SpikefleetError(
                f"{what} {ref!r}: give at least {MIN_PREFIX} digits of its sha256, or its name"
            )
        raise _not_found(what, ref)
    raise AmbiguousReferenceError(
        f"{what} {ref!r} is ambiguous; it matches {_listing(found, program_label)}: "
        "give more digits or name@version",
        [program_label(p) for p in found],
    )


def resolve_id(ref: str, items: Iterable[T], id_of: Callable[[T], str], *, what: str) -> T:
    """The one item whose id is ``ref`` or starts with it (rollouts, agents)."""
    ref = ref.strip()
    if not ref:
        raise SpikefleetError(f"no {what} given: pass its id (or a unique prefix of it)")
    pool = list(items)
    for item in pool:
        if id_of(item) == ref:
            return item
    found = [item for item in pool if id_of(item).startswith(ref)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFoundError(f"no {what} {ref!r} (ids or unique prefixes of them)", "NOT_FOUND")
    ids = sorted(id_of(item) for item in found)
    raise AmbiguousReferenceError(
        f"{what} {ref!r} is ambiguous; it matches {_listing(ids, str)}: give more of the id",
        ids,
    )


def assignment_target(ref: str, known_ids: Iterable[str]) -> str:
    """The agent id an assignment goes to: ``ref`` itself when it is a known id or no
    known id starts with it (an agent not seen yet gets it when it registers), else the
    one known id it is a prefix of."""
    ref = ref.strip()
    known = list(known_ids)
    if ref in known:
        return ref
    matches = [agent_id for agent_id in known if agent_id.startswith(ref)]
    return resolve_id(ref, matches, str, what="agent") if matches else ref


def _not_found(what: str, ref: str) -> NotFoundError:
    return NotFoundError(
        f"no {what} {ref!r} in the registry (a name, name@version or sha256 prefix; "
        "see 'spikefleet programs list')",
        "NOT_FOUND",
    )


def _unique(items: Iterable[T], key: Callable[[T], str]) -> list[T]:
    seen: dict[str, T] = {}
    for item in items:
        seen.setdefault(key(item), item)
    return list(seen.values())


def _listing(items: Sequence[T], label: Callable[[T], str]) -> str:
    shown = [label(item) for item in items[:CANDIDATES_SHOWN]]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
