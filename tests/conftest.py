"""Fixtures any suite may use; they live in the shared ``tests/support`` package."""

from support.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]
