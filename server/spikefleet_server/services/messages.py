"""Domain records <-> wire messages."""

from __future__ import annotations

import json

from spikefleet.v1 import converter_pb2
from spikefleet_server.registry import ProgramRecord


def program_info(record: ProgramRecord) -> converter_pb2.ProgramInfo:
    return converter_pb2.ProgramInfo(
        sha256=record.sha256,
        name=record.name,
        version=record.version,
        labels=record.labels,
        fidelity_json=json.dumps(record.fidelity, sort_keys=True),
        created_unix_ms=record.created_unix_ms,
        size=record.size,
        key_id=record.key_id,
        source_sha256=record.source_sha256,
    )
