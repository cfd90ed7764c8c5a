"""The one place that imports BrainChip's ``akida`` (an optional dependency)."""

from __future__ import annotations

from types import ModuleType

from spikefleet.errors import AkidaUnavailableError


def require_akida(what: str) -> ModuleType:
    """Import akida lazily; AkidaUnavailableError (naming ``what``) when missing."""
    try:
        import akida
    except ImportError:
        raise AkidaUnavailableError(what) from None
    return akida
