"""Run a suite on both database backends: SQLite (the default) and PostgreSQL.

A test (or a fixture) that takes ``database_target`` runs twice, as
``test_x[sqlite]`` and ``test_x[postgresql]``: it gets a SQLite file path in its
``tmp_path``, then the URL of a fresh PostgreSQL database on the session's one
throwaway server (:mod:`support.postgres`). Each PostgreSQL database is a copy
of a template migrated once per session (``CREATE DATABASE ... TEMPLATE``, a few
milliseconds), so a test pays neither for a server nor for migrations.

Tests that do not touch the database (CLI parsing, agent-local behaviour) take
no such fixture, or are marked :data:`sqlite_only`, and run once. PostgreSQL
tests never skip: without the server binaries the session fails naming how to
install them.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from spikefleet_server.storage import Database, upgrade
from support.postgres import PostgresCluster

BACKENDS = ("sqlite", "postgresql")
TEMPLATE = "spikefleet_template"

#: For a test whose fixtures take ``database_target`` but which checks nothing the
#: database does (argument parsing, messages): run it on SQLite only.
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


def migrated_template(cluster: PostgresCluster) -> str:
    """The name of a database on ``cluster`` at this server's schema (made once)."""
    if TEMPLATE not in cluster.templates:
        with cluster.connect() as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        db = Database(cluster.url(TEMPLATE))
        try:
            upgrade(db)
        finally:
            db.close()  # no connection may stay open to a template being copied
        cluster.templates.add(TEMPLATE)
    return TEMPLATE


# The next test's database is copied while this one runs (a copy takes 0.2-0.6 s on a
# loaded machine, mostly waiting on PostgreSQL's writes).
_spares: dict[Path, Future[str]] = {}
_copier = ThreadPoolExecutor(1, thread_name_prefix="pg-spare-database")


def postgres_database(cluster: PostgresCluster) -> str:
    """The URL of a new database on ``cluster`` with this server's schema."""
    template = migrated_template(cluster)
    spare = _spares.pop(cluster.base_dir, None)
    url = None
    if spare is not None:
        try:
            url = spare.result()
        except psycopg.Error:
            url = None  # made again below
    if url is None:
        url = cluster.create_database(template=template)
    _spares[cluster.base_dir] = _copier.submit(cluster.create_database, template=template)
    return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgresql``: the tests that use it run once on each."""
    return str(request.param)


@pytest.fixture
def database_target(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | Path:
    """Where the test's server keeps its data: a SQLite file, or a PostgreSQL URL (a fresh
    database, already migrated). The PostgreSQL server starts only when a test needs it."""
    if backend == "sqlite":
        return tmp_path / "spikefleet.db"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return postgres_database(cluster)
