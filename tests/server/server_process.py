"""The server tests' child processes: ``support.processes`` (kept as this name for the
tests that import it)."""

from support.processes import SERVER, ServerProcess, serve

__all__ = ["SERVER", "ServerProcess", "serve"]
