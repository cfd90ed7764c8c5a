"""The registry's program record, as stored, listed and sent (``ProgramInfo``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from spikefleet.v1 import converter_pb2


@dataclass(frozen=True)
class ProgramInfo:
    """One stored program: ``sha256`` is the digest of the program bytes (what agents
    verify), ``size`` that of the signed envelope."""

    sha256: str
    name: str
    version: int
    labels: dict[str, str] = field(default_factory=dict)
    fidelity: dict[str, Any] = field(default_factory=dict)
    created_unix_ms: int = 0
    size: int = 0
    key_id: str = ""
    source_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_proto(self) -> converter_pb2.ProgramInfo:
        return converter_pb2.ProgramInfo(
            sha256=self.sha256,
            name=self.name,
            version=self.version,
            labels=self.labels,
            fidelity_json=json.dumps(self.fidelity, sort_keys=True),
            created_unix_ms=self.created_unix_ms,
            size=self.size,
            key_id=self.key_id,
            source_sha256=self.source_sha256,
        )

    @classmethod
    def from_proto(cls, message: converter_pb2.ProgramInfo) -> ProgramInfo:
        return cls(
            sha256=message.sha256,
            name=message.name,
            version=message.version,
            labels=dict(message.labels),
            fidelity=json.loads(message.fidelity_json) if message.fidelity_json else {},
            created_unix_ms=message.created_unix_ms,
            size=message.size,
            key_id=message.key_id,
            source_sha256=message.source_sha256,
        )
