from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TelemetryQueryRequest(_message.Message):
    __slots__ = ("since_unix_ms", "until_unix_ms", "agent_ids", "program_sha256s")
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_SHA256S_FIELD_NUMBER: _ClassVar[int]
    since_unix_ms: int
    until_unix_ms: int
    agent_ids: _containers.RepeatedScalarFieldContainer[str]
    program_sha256s: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, since_unix_ms: _Optional[int] = ..., until_unix_ms: _Optional[int] = ..., agent_ids: _Optional[_Iterable[str]] = ..., program_sha256s: _Optional[_Iterable[str]] = ...) -> None: ...

class TelemetryStats(_message.Message):
    __slots__ = ("key", "batches", "frames", "events", "predictions", "errors", "error_kinds", "first_unix_ms", "last_unix_ms", "frames_per_s", "latency_p50_ms", "latency_p99_ms", "class_histogram", "spike_rates", "shadow_frames", "shadow_agreements", "related")
    class ErrorKindsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class SpikeRatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_KINDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PER_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    CLASS_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    SPIKE_RATES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_AGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    RELATED_FIELD_NUMBER: _ClassVar[int]
    key: str
    batches: int
    frames: int
    events: int
    predictions: int
    errors: int
    error_kinds: _containers.ScalarMap[str, int]
    first_unix_ms: int
    last_unix_ms: int
    frames_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    class_histogram: _containers.RepeatedScalarFieldContainer[int]
    spike_rates: _containers.ScalarMap[str, float]
    shadow_frames: int
    shadow_agreements: int
    related: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., batches: _Optional[int] = ..., frames: _Optional[int] = ..., events: _Optional[int] = ..., predictions: _Optional[int] = ..., errors: _Optional[int] = ..., error_kinds: _Optional[_Mapping[str, int]] = ..., first_unix_ms: _Optional[int] = ..., last_unix_ms: _Optional[int] = ..., frames_per_s: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., class_histogram: _Optional[_Iterable[int]] = ..., spike_rates: _Optional[_Mapping[str, float]] = ..., shadow_frames: _Optional[int] = ..., shadow_agreements: _Optional[int] = ..., related: _Optional[_Iterable[str]] = ...) -> None: ...

class TelemetrySummary(_message.Message):
    __slots__ = ("since_unix_ms", "until_unix_ms", "agents", "programs")
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    PROGRAMS_FIELD_NUMBER: _ClassVar[int]
    since_unix_ms: int
    until_unix_ms: int
    agents: _containers.RepeatedCompositeFieldContainer[TelemetryStats]
    programs: _containers.RepeatedCompositeFieldContainer[TelemetryStats]
    def __init__(self, since_unix_ms: _Optional[int] = ..., until_unix_ms: _Optional[int] = ..., agents: _Optional[_Iterable[_Union[TelemetryStats, _Mapping]]] = ..., programs: _Optional[_Iterable[_Union[TelemetryStats, _Mapping]]] = ...) -> None: ...
