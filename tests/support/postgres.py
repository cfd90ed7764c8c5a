"""A throwaway PostgreSQL server for the test session.

The suites that run on PostgreSQL need a real server, and CI machines have
none running: this starts one in a temporary directory (``initdb`` +
``pg_ctl``), listening on a free loopback port and on a unix socket in that
directory, and removes it at the end of the session. PostgreSQL refuses to run
as root, so as root the server runs as the ``postgres`` system user (created
by Debian's ``postgresql`` package, which ``make test`` installs where the
binaries are missing).

Use the ``postgres_cluster`` fixture (one server per session) or
``postgres_url`` (a fresh, empty database per test on that server).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

log = logging.getLogger(__name__)

#: Where Debian and Ubuntu put the server binaries (not on PATH by default).
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
POSTGRES_USER = "postgres"
START_ATTEMPTS = 3
_REMOVERS: list[subprocess.Popen[bytes]] = []


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are missing or the server would not start."""


def find_binary(name: str) -> str:
    """The path of a PostgreSQL server program: PATH first, then Debian's versioned directories."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"{DEBIAN_BIN_GLOB}/{name}"),
        key=lambda p: _version_key(Path(p).parent.parent.name),
        reverse=True,
    )
    if candidates:
        return candidates[0]
    raise PostgresUnavailable(
        f"PostgreSQL's {name!r} was not found on PATH or in {DEBIAN_BIN_GLOB}; "
        "install the server binaries (`apt-get install postgresql`, which `make test` does)"
    )


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresCluster:
    """One running PostgreSQL server in a directory of its own, with a trusted superuser."""

    base_dir: Path
    port: int
    user: str = POSTGRES_USER
    _databases: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    templates: set[str] = field(default_factory=set)  # databases made to be copied

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3 driver) for ``database`` over loopback TCP."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string for ``database``, for psycopg or psql."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn(database), autocommit=True)

    def create_database(self, prefix: str = "test", *, template: str | None = None) -> str:
        """Create a database (empty, or a copy of ``template``, which must have no open
        connections) and return its SQLAlchemy URL."""
        name = f"{prefix}_{next(self._databases)}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _as_server_user(argv: Sequence[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres system user."""
    if os.geteuid() != 0:
        return list(argv)
    try:
        pwd.getpwnam(POSTGRES_USER)
    except KeyError as exc:
        raise PostgresUnavailable(
            f"running as root, and there is no {POSTGRES_USER!r} user to run PostgreSQL as; "
            "install Debian's postgresql package (it creates the user) or run as another user"
        ) from exc
    return [_runuser(), "-u", POSTGRES_USER, "--", *argv]


def _runuser() -> str:
    found = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if not found:
        raise PostgresUnavailable("running as root needs runuser(1) to start PostgreSQL")
    return found


def _run(argv: Sequence[str]) -> None:
    result = subprocess.run(
        _as_server_user(argv), capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise PostgresUnavailable(
            f"{Path(argv[0]).name} failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )


@contextlib.contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    """Start a PostgreSQL server in a new temporary directory; stop and delete it on exit."""
    initdb = find_binary("initdb")
    pg_ctl = find_binary("pg_ctl")
    # Not under pytest's tmp_path: its parents are root-only (0700), which the
    # postgres user could not traverse.
    base = Path(tempfile.mkdtemp(prefix="spikefleet-pg-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(POSTGRES_USER)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    cluster = PostgresCluster(base_dir=base, port=0)
    started = False
    try:
        _run(
            [
                initdb,
                "--pgdata",
                str(cluster.data_dir),
                "--username",
                POSTGRES_USER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-sync",
            ]
        )
        for attempt in range(1, START_ATTEMPTS + 1):
            cluster.port = free_port()
            options = " ".join(
                [
                    f"-p {cluster.port}",
                    f"-k {cluster.socket_dir}",
                    "-c listen_addresses=127.0.0.1",
                    # A throwaway server: durability buys nothing, speed does.
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=300",
                    "-c shared_buffers=32MB",
                ]
            )
            try:
                _run(
                    [
                        pg_ctl,
                        "start",
                        "--pgdata",
                        str(cluster.data_dir),
                        "--wait",
                        "--timeout",
                        "60",
                        "--log",
                        str(cluster.log_file),
                        "-o",
                        options,
                    ]
                )
            except PostgresUnavailable:
                # Most likely the port was taken between probing and binding.
                if attempt == START_ATTEMPTS:
                    raise PostgresUnavailable(
                        f"PostgreSQL did not start; its log ends:\n{cluster.log_tail()}"
                    ) from None
                log.warning("PostgreSQL start attempt %d failed; retrying", attempt)
                continue
            started = True
            break
        log.info("throwaway PostgreSQL on 127.0.0.1:%d in %s", cluster.port, base)
        yield cluster
    finally:
        if started:
            with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
                _run([pg_ctl, "stop", "--pgdata", str(cluster.data_dir), "-m", "immediate"])
        _remove_later(base)


def _remove_later(base: Path) -> None:
    """Delete the cluster's directory without waiting: a session's hundred databases are
    tens of thousands of files, which take many seconds to unlink."""
    try:
        remover = subprocess.Popen(
            ["rm", "-rf", "--", str(base)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives this process if need be
        )
        _REMOVERS.append(remover)  # not collected (and warned about) while it runs
    except OSError:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL server for the whole test session."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``) of a fresh, empty database."""
    return postgres_cluster.create_database()
