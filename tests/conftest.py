"""Fixtures any suite may use; they live in the shared ``tests/support`` package."""

from support.backends import backend, database_target
from support.postgres import postgres_cluster, postgres_url

__all__ = ["backend", "database_target", "postgres_cluster", "postgres_url"]
