"""The throwaway PostgreSQL server really runs, and each test gets a database of its own."""

from __future__ import annotations

import psycopg

from support.postgres import PostgresCluster


def _libpq(url: str) -> str:
    """The SQLAlchemy URL without its driver name is a libpq URI."""
    assert url.startswith("postgresql+psycopg://")
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def test_the_url_reaches_a_real_server(postgres_url: str) -> None:
    with psycopg.connect(_libpq(postgres_url)) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None and row[0] >= 120000


def test_each_database_starts_empty_and_keeps_what_is_written(postgres_url: str) -> None:
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE marks (n integer)")
        conn.execute("INSERT INTO marks VALUES (1), (2)")
    with psycopg.connect(_libpq(postgres_url)) as conn:
        assert conn.execute("SELECT sum(n) FROM marks").fetchone() == (3,)


def test_listen_notify_and_the_unix_socket_work(postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.create_database("notify")
    database = url.rsplit("/", 1)[1]
    socket_dsn = (
        f"host={postgres_cluster.socket_dir} port={postgres_cluster.port} "
        f"user={postgres_cluster.user} dbname={database}"
    )
    with (
        psycopg.connect(socket_dsn, autocommit=True) as listener,
        psycopg.connect(_libpq(url), autocommit=True) as sender,
    ):
        listener.execute("LISTEN spikefleet_test")
        sender.execute("SELECT pg_notify('spikefleet_test', 'hello')")
        received = next(listener.notifies(timeout=10, stop_after=1))
    assert (received.channel, received.payload) == ("spikefleet_test", "hello")
