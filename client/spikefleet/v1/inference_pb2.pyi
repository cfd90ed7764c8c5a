from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrameBatch(_message.Message):
    __slots__ = ("frames", "shape", "seq", "sample_id", "end_of_sample", "return_outputs")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    END_OF_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    RETURN_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    frames: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    seq: int
    sample_id: str
    end_of_sample: bool
    return_outputs: bool
    def __init__(self, frames: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., seq: _Optional[int] = ..., sample_id: _Optional[str] = ..., end_of_sample: _Optional[bool] = ..., return_outputs: _Optional[bool] = ...) -> None: ...

class EventPacket(_message.Message):
    __slots__ = ("events", "seq", "sample_id", "end_of_sample", "sensor_width", "sensor_height", "time_window_us")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    END_OF_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SENSOR_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SENSOR_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TIME_WINDOW_US_FIELD_NUMBER: _ClassVar[int]
    events: bytes
    seq: int
    sample_id: str
    end_of_sample: bool
    sensor_width: int
    sensor_height: int
    time_window_us: int
    def __init__(self, events: _Optional[bytes] = ..., seq: _Optional[int] = ..., sample_id: _Optional[str] = ..., end_of_sample: _Optional[bool] = ..., sensor_width: _Optional[int] = ..., sensor_height: _Optional[int] = ..., time_window_us: _Optional[int] = ...) -> None: ...

class SampleResult(_message.Message):
    __slots__ = ("sample_id", "predicted_class", "frames", "scores")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    predicted_class: int
    frames: int
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, sample_id: _Optional[str] = ..., predicted_class: _Optional[int] = ..., frames: _Optional[int] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class Predictions(_message.Message):
    __slots__ = ("seq", "classes", "program_sha256", "outputs", "output_shape", "output_dtype", "sample", "frames", "decision", "decisions")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_SHA256_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    classes: _containers.RepeatedScalarFieldContainer[int]
    program_sha256: str
    outputs: bytes
    output_shape: _containers.RepeatedScalarFieldContainer[int]
    output_dtype: str
    sample: SampleResult
    frames: int
    decision: str
    decisions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, seq: _Optional[int] = ..., classes: _Optional[_Iterable[int]] = ..., program_sha256: _Optional[str] = ..., outputs: _Optional[bytes] = ..., output_shape: _Optional[_Iterable[int]] = ..., output_dtype: _Optional[str] = ..., sample: _Optional[_Union[SampleResult, _Mapping]] = ..., frames: _Optional[int] = ..., decision: _Optional[str] = ..., decisions: _Optional[_Iterable[int]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("agent_id", "backend", "program_sha256", "previous_sha256", "program_name", "input_shape", "input_bits", "labels", "connected", "frames", "spooled_batches", "shadow_sha256", "version")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_SHA256_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SHA256_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_BITS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SPOOLED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHA256_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    backend: str
    program_sha256: str
    previous_sha256: str
    program_name: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    input_bits: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    connected: bool
    frames: int
    spooled_batches: int
    shadow_sha256: str
    version: str
    def __init__(self, agent_id: _Optional[str] = ..., backend: _Optional[str] = ..., program_sha256: _Optional[str] = ..., previous_sha256: _Optional[str] = ..., program_name: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., input_bits: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., connected: _Optional[bool] = ..., frames: _Optional[int] = ..., spooled_batches: _Optional[int] = ..., shadow_sha256: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...
