from spikefleet.v1 import converter_pb2 as _converter_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListProgramsRequest(_message.Message):
    __slots__ = ("name", "labels", "latest_only")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LATEST_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    latest_only: bool
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., latest_only: _Optional[bool] = ...) -> None: ...

class ListProgramsResponse(_message.Message):
    __slots__ = ("programs",)
    PROGRAMS_FIELD_NUMBER: _ClassVar[int]
    programs: _containers.RepeatedCompositeFieldContainer[_converter_pb2.ProgramInfo]
    def __init__(self, programs: _Optional[_Iterable[_Union[_converter_pb2.ProgramInfo, _Mapping]]] = ...) -> None: ...

class ProgramRef(_message.Message):
    __slots__ = ("sha256", "name", "version")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    name: str
    version: int
    def __init__(self, sha256: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ProgramData(_message.Message):
    __slots__ = ("chunk", "info")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    info: _converter_pb2.ProgramInfo
    def __init__(self, chunk: _Optional[bytes] = ..., info: _Optional[_Union[_converter_pb2.ProgramInfo, _Mapping]] = ...) -> None: ...

class DeleteProgramResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: _converter_pb2.ProgramInfo
    def __init__(self, deleted: _Optional[_Union[_converter_pb2.ProgramInfo, _Mapping]] = ...) -> None: ...

class TrustedKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublicKeyInfo(_message.Message):
    __slots__ = ("key_id", "pem", "endorsed_by", "endorsement")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PEM_FIELD_NUMBER: _ClassVar[int]
    ENDORSED_BY_FIELD_NUMBER: _ClassVar[int]
    ENDORSEMENT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    pem: bytes
    endorsed_by: str
    endorsement: bytes
    def __init__(self, key_id: _Optional[str] = ..., pem: _Optional[bytes] = ..., endorsed_by: _Optional[str] = ..., endorsement: _Optional[bytes] = ...) -> None: ...

class TrustedKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[PublicKeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[PublicKeyInfo, _Mapping]]] = ...) -> None: ...
