"""Schema migrations (Alembic), run by ``spikefleet-server db upgrade`` and at start.

Revisions live in ``versions/`` beside this file; ``alembic_version`` in the
database records the one applied. A database whose revision this server does not
know was upgraded by a newer spikefleet-server: it is refused rather than served
with a schema the code does not match.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from spikefleet.errors import ServerConfigError
from spikefleet_server import __version__
from spikefleet_server.storage.database import STORAGE_THREADS, Database

_HERE = Path(__file__).resolve().parent
UPGRADE_COMMAND = "spikefleet-server db upgrade"
_PG_LOCK = 0x5F1EF1EE7  # pg_advisory_xact_lock key: one replica migrates at a time


class SchemaError(ServerConfigError):
    """The database's schema is not the one this server runs on (newer, or not upgraded)."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    return config


def head_revision() -> str:
    """The newest schema revision this server knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    """The database's schema revision (None: empty, or made by 0.1.0 before migrations)."""
    with db.read() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _refuse_newer(db: Database, revision: str | None) -> None:
    if revision is None:
        return
    try:
        ScriptDirectory.from_config(_config()).get_revision(revision)
    except CommandError:
        raise SchemaError(
            f"the database {db.describe()} has schema revision {revision}, newer than "
            f"spikefleet-server {__version__} knows (its newest is {head_revision()}): it was "
            f"upgraded by a newer release with '{UPGRADE_COMMAND}'; run that release, "
            "or restore a backup made before the upgrade"
        ) from None


def upgrade(db: Database) -> tuple[str | None, str]:
    """Bring the schema to :func:`head_revision`, keeping every row; (before, after)."""
    before = current_revision(db)
    _refuse_newer(db, before)
    config = _config()
    with db.write() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return before, head_revision()


def check_schema(db: Database) -> str:
    """The database's revision if it is this server's; else SchemaError naming the fix."""
    revision = current_revision(db)
    _refuse_newer(db, revision)
    head = head_revision()
    if revision != head:
        raise SchemaError(
            f"the database {db.describe()} has schema revision {revision or 'none'}, "
            f"spikefleet-server {__version__} needs {head}: run '{UPGRADE_COMMAND}' "
            "(or start the server without --no-db-upgrade)"
        )
    return revision


def open_database(
    target: str | os.PathLike[str], *, migrate: bool = True, threads: int = STORAGE_THREADS
) -> Database:
    """Open the database at ``target`` (path or URL) with this server's schema: upgraded
    to it (``migrate``), or checked to be it (SchemaError otherwise)."""
    db = Database(target, threads=threads)
    try:
        if migrate:
            upgrade(db)
        else:
            check_schema(db)
    except BaseException:
        db.close()
        raise
    return db
