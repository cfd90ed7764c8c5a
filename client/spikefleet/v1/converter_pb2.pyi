from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConvertOptions(_message.Message):
    __slots__ = ("filename", "arch", "name", "labels", "weights_bits", "allow_beta", "total_size", "upload_sha256", "class_labels", "calibration_size", "calibration_sha256", "input_shape", "input_scale", "allow_shift", "clip", "no_hardware", "input_spec_json")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BITS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_BETA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABELS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SIZE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SHA256_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCALE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SHIFT_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    NO_HARDWARE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    filename: str
    arch: str
    name: str
    labels: _containers.ScalarMap[str, str]
    weights_bits: int
    allow_beta: bool
    total_size: int
    upload_sha256: str
    class_labels: _containers.RepeatedScalarFieldContainer[str]
    calibration_size: int
    calibration_sha256: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    input_scale: float
    allow_shift: bool
    clip: str
    no_hardware: bool
    input_spec_json: str
    def __init__(self, filename: _Optional[str] = ..., arch: _Optional[str] = ..., name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., weights_bits: _Optional[int] = ..., allow_beta: _Optional[bool] = ..., total_size: _Optional[int] = ..., upload_sha256: _Optional[str] = ..., class_labels: _Optional[_Iterable[str]] = ..., calibration_size: _Optional[int] = ..., calibration_sha256: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., input_scale: _Optional[float] = ..., allow_shift: _Optional[bool] = ..., clip: _Optional[str] = ..., no_hardware: _Optional[bool] = ..., input_spec_json: _Optional[str] = ...) -> None: ...

class ConvertRequest(_message.Message):
    __slots__ = ("options", "chunk", "calibration_chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: ConvertOptions
    chunk: bytes
    calibration_chunk: bytes
    def __init__(self, options: _Optional[_Union[ConvertOptions, _Mapping]] = ..., chunk: _Optional[bytes] = ..., calibration_chunk: _Optional[bytes] = ...) -> None: ...

class ConvertProgress(_message.Message):
    __slots__ = ("stage", "fraction", "message")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    stage: str
    fraction: float
    message: str
    def __init__(self, stage: _Optional[str] = ..., fraction: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class ProgramInfo(_message.Message):
    __slots__ = ("sha256", "name", "version", "labels", "fidelity_json", "created_unix_ms", "size", "key_id", "source_sha256")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    name: str
    version: int
    labels: _containers.ScalarMap[str, str]
    fidelity_json: str
    created_unix_ms: int
    size: int
    key_id: str
    source_sha256: str
    def __init__(self, sha256: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., fidelity_json: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., size: _Optional[int] = ..., key_id: _Optional[str] = ..., source_sha256: _Optional[str] = ...) -> None: ...

class ConvertResult(_message.Message):
    __slots__ = ("program",)
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    program: ProgramInfo
    def __init__(self, program: _Optional[_Union[ProgramInfo, _Mapping]] = ...) -> None: ...

class ConvertReply(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: ConvertProgress
    result: ConvertResult
    def __init__(self, progress: _Optional[_Union[ConvertProgress, _Mapping]] = ..., result: _Optional[_Union[ConvertResult, _Mapping]] = ...) -> None: ...
