from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeleteAgentRequest(_message.Message):
    __slots__ = ("agent_id", "force")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    force: bool
    def __init__(self, agent_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteAgentResponse(_message.Message):
    __slots__ = ("was_connected", "telemetry_batches", "installs")
    WAS_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_BATCHES_FIELD_NUMBER: _ClassVar[int]
    INSTALLS_FIELD_NUMBER: _ClassVar[int]
    was_connected: bool
    telemetry_batches: int
    installs: int
    def __init__(self, was_connected: _Optional[bool] = ..., telemetry_batches: _Optional[int] = ..., installs: _Optional[int] = ...) -> None: ...

class AssignRequest(_message.Message):
    __slots__ = ("agent_id", "sha256", "shadow_sha256", "rollback")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHA256_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    sha256: str
    shadow_sha256: str
    rollback: bool
    def __init__(self, agent_id: _Optional[str] = ..., sha256: _Optional[str] = ..., shadow_sha256: _Optional[str] = ..., rollback: _Optional[bool] = ...) -> None: ...

class AssignResponse(_message.Message):
    __slots__ = ("generation", "connected")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    generation: int
    connected: bool
    def __init__(self, generation: _Optional[int] = ..., connected: _Optional[bool] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("kind", "bus", "vendor_id", "product_id", "description", "address")
    KIND_FIELD_NUMBER: _ClassVar[int]
    BUS_FIELD_NUMBER: _ClassVar[int]
    VENDOR_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    bus: str
    vendor_id: int
    product_id: int
    description: str
    address: str
    def __init__(self, kind: _Optional[str] = ..., bus: _Optional[str] = ..., vendor_id: _Optional[int] = ..., product_id: _Optional[int] = ..., description: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("agent_id", "labels", "inventory", "backend", "program_sha256", "previous_sha256", "version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_SHA256_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SHA256_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    labels: _containers.ScalarMap[str, str]
    inventory: _containers.RepeatedCompositeFieldContainer[Device]
    backend: str
    program_sha256: str
    previous_sha256: str
    version: str
    def __init__(self, agent_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., inventory: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., backend: _Optional[str] = ..., program_sha256: _Optional[str] = ..., previous_sha256: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("unix_ms", "program_sha256", "health", "shadow_sha256")
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_SHA256_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHA256_FIELD_NUMBER: _ClassVar[int]
    unix_ms: int
    program_sha256: str
    health: str
    shadow_sha256: str
    def __init__(self, unix_ms: _Optional[int] = ..., program_sha256: _Optional[str] = ..., health: _Optional[str] = ..., shadow_sha256: _Optional[str] = ...) -> None: ...

class TelemetryBatch(_message.Message):
    __slots__ = ("seq", "start_unix_ms", "end_unix_ms", "program_sha256", "backend", "frames", "events", "predictions", "errors", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "spike_rates", "class_histogram", "inventory", "error_kinds", "shadow_frames", "shadow_agreements", "shadow_sha256", "power", "spool_dropped", "stream_overrides")
    class SpikeRatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ErrorKindsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class StreamOverridesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_SHA256_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    SPIKE_RATES_FIELD_NUMBER: _ClassVar[int]
    CLASS_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    ERROR_KINDS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_AGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHA256_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DROPPED_FIELD_NUMBER: _ClassVar[int]
    STREAM_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    start_unix_ms: int
    end_unix_ms: int
    program_sha256: str
    backend: str
    frames: int
    events: int
    predictions: int
    errors: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    spike_rates: _containers.ScalarMap[str, float]
    class_histogram: _containers.RepeatedScalarFieldContainer[int]
    inventory: _containers.RepeatedCompositeFieldContainer[Device]
    error_kinds: _containers.ScalarMap[str, int]
    shadow_frames: int
    shadow_agreements: int
    shadow_sha256: str
    power: _containers.RepeatedCompositeFieldContainer[DevicePower]
    spool_dropped: int
    stream_overrides: _containers.ScalarMap[str, int]
    def __init__(self, seq: _Optional[int] = ..., start_unix_ms: _Optional[int] = ..., end_unix_ms: _Optional[int] = ..., program_sha256: _Optional[str] = ..., backend: _Optional[str] = ..., frames: _Optional[int] = ..., events: _Optional[int] = ..., predictions: _Optional[int] = ..., errors: _Optional[int] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., spike_rates: _Optional[_Mapping[str, float]] = ..., class_histogram: _Optional[_Iterable[int]] = ..., inventory: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., error_kinds: _Optional[_Mapping[str, int]] = ..., shadow_frames: _Optional[int] = ..., shadow_agreements: _Optional[int] = ..., shadow_sha256: _Optional[str] = ..., power: _Optional[_Iterable[_Union[DevicePower, _Mapping]]] = ..., spool_dropped: _Optional[int] = ..., stream_overrides: _Optional[_Mapping[str, int]] = ...) -> None: ...

class DevicePower(_message.Message):
    __slots__ = ("unix_ms", "voltage_mv", "current_ma", "power_mw")
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    VOLTAGE_MV_FIELD_NUMBER: _ClassVar[int]
    CURRENT_MA_FIELD_NUMBER: _ClassVar[int]
    POWER_MW_FIELD_NUMBER: _ClassVar[int]
    unix_ms: int
    voltage_mv: float
    current_ma: float
    power_mw: float
    def __init__(self, unix_ms: _Optional[int] = ..., voltage_mv: _Optional[float] = ..., current_ma: _Optional[float] = ..., power_mw: _Optional[float] = ...) -> None: ...

class InstallReport(_message.Message):
    __slots__ = ("sha256", "status", "reason", "detail", "generation")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[InstallReport.Status]
        INSTALLED: _ClassVar[InstallReport.Status]
        FAILED: _ClassVar[InstallReport.Status]
        REFUSED: _ClassVar[InstallReport.Status]
        ROLLED_BACK: _ClassVar[InstallReport.Status]
    STATUS_UNSPECIFIED: InstallReport.Status
    INSTALLED: InstallReport.Status
    FAILED: InstallReport.Status
    REFUSED: InstallReport.Status
    ROLLED_BACK: InstallReport.Status
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    status: InstallReport.Status
    reason: str
    detail: str
    generation: int
    def __init__(self, sha256: _Optional[str] = ..., status: _Optional[_Union[InstallReport.Status, str]] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "telemetry", "install")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    INSTALL_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    telemetry: TelemetryBatch
    install: InstallReport
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., telemetry: _Optional[_Union[TelemetryBatch, _Mapping]] = ..., install: _Optional[_Union[InstallReport, _Mapping]] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("agent_id", "last_telemetry_seq", "heartbeat_interval_ms", "telemetry_counts_as_heartbeat")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_TELEMETRY_SEQ_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_COUNTS_AS_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    last_telemetry_seq: int
    heartbeat_interval_ms: int
    telemetry_counts_as_heartbeat: bool
    def __init__(self, agent_id: _Optional[str] = ..., last_telemetry_seq: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ..., telemetry_counts_as_heartbeat: _Optional[bool] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("sha256", "generation", "shadow_sha256", "rollback")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHA256_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    generation: int
    shadow_sha256: str
    rollback: bool
    def __init__(self, sha256: _Optional[str] = ..., generation: _Optional[int] = ..., shadow_sha256: _Optional[str] = ..., rollback: _Optional[bool] = ...) -> None: ...

class TelemetryAck(_message.Message):
    __slots__ = ("seq", "refused")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    seq: int
    refused: str
    def __init__(self, seq: _Optional[int] = ..., refused: _Optional[str] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("registered", "assignment", "telemetry_ack")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_ACK_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    assignment: Assignment
    telemetry_ack: TelemetryAck
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., telemetry_ack: _Optional[_Union[TelemetryAck, _Mapping]] = ...) -> None: ...

class FetchProgramRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class ProgramChunk(_message.Message):
    __slots__ = ("data", "total_size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    total_size: int
    def __init__(self, data: _Optional[bytes] = ..., total_size: _Optional[int] = ...) -> None: ...
