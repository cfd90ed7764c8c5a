"""The Converter service's progress events (its result is a registry ``ProgramInfo``)."""

from __future__ import annotations

from dataclasses import dataclass

from spikefleet.v1 import converter_pb2


@dataclass(frozen=True)
class ConvertProgress:
    """Where a conversion is: its ``stage`` (upload, queued, the converter's steps, sign,
    store) and the ``fraction`` of the whole done, 0..1."""

    stage: str
    fraction: float
    message: str

    def to_proto(self) -> converter_pb2.ConvertProgress:
        return converter_pb2.ConvertProgress(
            stage=self.stage, fraction=min(1.0, self.fraction), message=self.message
        )

    @classmethod
    def from_proto(cls, message: converter_pb2.ConvertProgress) -> ConvertProgress:
        return cls(message.stage, message.fraction, message.message)
