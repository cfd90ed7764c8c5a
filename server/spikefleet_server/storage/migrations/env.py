"""Alembic's entry point: migrate the connection :func:`spikefleet_server.storage.upgrade`
hands over (no alembic.ini; the server's own config says where the database is)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
