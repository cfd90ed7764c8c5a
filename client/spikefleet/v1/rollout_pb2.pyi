from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentInfo(_message.Message):
    __slots__ = ("agent_id", "labels", "backend", "program_sha256", "previous_sha256", "shadow_sha256", "health", "connected", "last_seen_unix_ms", "devices", "version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_SHA256_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SHA256_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHA256_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    labels: _containers.ScalarMap[str, str]
    backend: str
    program_sha256: str
    previous_sha256: str
    shadow_sha256: str
    health: str
    connected: bool
    last_seen_unix_ms: int
    devices: int
    version: str
    def __init__(self, agent_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., backend: _Optional[str] = ..., program_sha256: _Optional[str] = ..., previous_sha256: _Optional[str] = ..., shadow_sha256: _Optional[str] = ..., health: _Optional[str] = ..., connected: _Optional[bool] = ..., last_seen_unix_ms: _Optional[int] = ..., devices: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("selector",)
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    selector: _containers.ScalarMap[str, str]
    def __init__(self, selector: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class Gates(_message.Message):
    __slots__ = ("max_error_rate", "max_p99_ms", "min_agreement", "min_shadow_frames")
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    MIN_SHADOW_FRAMES_FIELD_NUMBER: _ClassVar[int]
    max_error_rate: float
    max_p99_ms: float
    min_agreement: float
    min_shadow_frames: int
    def __init__(self, max_error_rate: _Optional[float] = ..., max_p99_ms: _Optional[float] = ..., min_agreement: _Optional[float] = ..., min_shadow_frames: _Optional[int] = ...) -> None: ...

class RolloutSpec(_message.Message):
    __slots__ = ("program_sha256", "selector", "canary_count", "canary_percent", "waves", "bake_s", "gates", "install_timeout_s", "max_failed_installs")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROGRAM_SHA256_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    CANARY_COUNT_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    WAVES_FIELD_NUMBER: _ClassVar[int]
    BAKE_S_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    INSTALL_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILED_INSTALLS_FIELD_NUMBER: _ClassVar[int]
    program_sha256: str
    selector: _containers.ScalarMap[str, str]
    canary_count: int
    canary_percent: float
    waves: _containers.RepeatedScalarFieldContainer[float]
    bake_s: float
    gates: Gates
    install_timeout_s: float
    max_failed_installs: int
    def __init__(self, program_sha256: _Optional[str] = ..., selector: _Optional[_Mapping[str, str]] = ..., canary_count: _Optional[int] = ..., canary_percent: _Optional[float] = ..., waves: _Optional[_Iterable[float]] = ..., bake_s: _Optional[float] = ..., gates: _Optional[_Union[Gates, _Mapping]] = ..., install_timeout_s: _Optional[float] = ..., max_failed_installs: _Optional[int] = ...) -> None: ...

class CreateRolloutRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: RolloutSpec
    def __init__(self, spec: _Optional[_Union[RolloutSpec, _Mapping]] = ...) -> None: ...

class RolloutAgent(_message.Message):
    __slots__ = ("agent_id", "phase", "from_sha256", "status", "detail")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    FROM_SHA256_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    phase: int
    from_sha256: str
    status: str
    detail: str
    def __init__(self, agent_id: _Optional[str] = ..., phase: _Optional[int] = ..., from_sha256: _Optional[str] = ..., status: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class RolloutEvent(_message.Message):
    __slots__ = ("unix_ms", "message")
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    unix_ms: int
    message: str
    def __init__(self, unix_ms: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class GateResult(_message.Message):
    __slots__ = ("name", "passed", "value", "threshold", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    passed: bool
    value: float
    threshold: float
    detail: str
    def __init__(self, name: _Optional[str] = ..., passed: _Optional[bool] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("rollout_id", "spec", "state", "phase", "phases", "stage", "stage_started_unix_ms", "reason", "agents", "events", "gates", "created_unix_ms", "updated_unix_ms", "version", "canary")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    spec: RolloutSpec
    state: str
    phase: int
    phases: int
    stage: str
    stage_started_unix_ms: int
    reason: str
    agents: _containers.RepeatedCompositeFieldContainer[RolloutAgent]
    events: _containers.RepeatedCompositeFieldContainer[RolloutEvent]
    gates: _containers.RepeatedCompositeFieldContainer[GateResult]
    created_unix_ms: int
    updated_unix_ms: int
    version: int
    canary: bool
    def __init__(self, rollout_id: _Optional[str] = ..., spec: _Optional[_Union[RolloutSpec, _Mapping]] = ..., state: _Optional[str] = ..., phase: _Optional[int] = ..., phases: _Optional[int] = ..., stage: _Optional[str] = ..., stage_started_unix_ms: _Optional[int] = ..., reason: _Optional[str] = ..., agents: _Optional[_Iterable[_Union[RolloutAgent, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[RolloutEvent, _Mapping]]] = ..., gates: _Optional[_Iterable[_Union[GateResult, _Mapping]]] = ..., created_unix_ms: _Optional[int] = ..., updated_unix_ms: _Optional[int] = ..., version: _Optional[int] = ..., canary: _Optional[bool] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("rollout_id",)
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    def __init__(self, rollout_id: _Optional[str] = ...) -> None: ...

class ListRolloutsRequest(_message.Message):
    __slots__ = ("active_only",)
    ACTIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    active_only: bool
    def __init__(self, active_only: _Optional[bool] = ...) -> None: ...

class ListRolloutsResponse(_message.Message):
    __slots__ = ("rollouts",)
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    rollouts: _containers.RepeatedCompositeFieldContainer[Rollout]
    def __init__(self, rollouts: _Optional[_Iterable[_Union[Rollout, _Mapping]]] = ...) -> None: ...

class RolloutActionRequest(_message.Message):
    __slots__ = ("rollout_id", "reason")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    reason: str
    def __init__(self, rollout_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
