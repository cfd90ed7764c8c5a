"""What the server accepts on an agent's control stream, checked before anything is stored.

Protobuf's uint64 reaches 2**64-1 but a SQLite INTEGER holds at most 2**63-1, and a
double may be NaN (which SQLite stores as NULL): a value the database cannot hold
must be refused at the boundary, by name, instead of failing a whole group commit
deep inside the writer. Sizes are bounded so one agent (or one stolen agent
token) cannot fill the disk: ``telemetry_max_batch_bytes`` per batch,
``telemetry_rate_bytes_per_s`` per agent, and retention (age and rows per agent).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from spikefleet.v1 import fleet_pb2

INT64_MAX = 2**63 - 1
"""The largest integer SQLite (and PostgreSQL's BIGINT) can store."""

MAX_AGENT_ID = 128
MAX_LABELS = 64
MAX_TEXT = 256  # label keys and values, backend, version, health, reason
MAX_DEVICES = 256
MAX_DETAIL = 4096  # install report detail: longer ones are cut, not refused

_AGENT_ID = re.compile(r"[^\x00-\x20\x7f]|[^\x00-\x20\x7f][^\x00-\x1f\x7f]*[^\x00-\x20\x7f]")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TelemetryLimits:
    """Per-agent telemetry bounds (server config keys ``telemetry_*``); 0 turns one off."""

    max_batch_bytes: int = 64 * 1024
    rate_bytes_per_s: int = 64 * 1024  # average per agent; bursts of 16 s worth
    retention_days: float = 30.0
    max_batches_per_agent: int = 600_000  # about 34 days of 5-second periods

    @property
    def burst_bytes(self) -> int:
        return max(16 * self.rate_bytes_per_s, self.max_batch_bytes)


_WIDE = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
_REAL = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


@dataclass(frozen=True)
class _Plan:
    """Where a message type can hold a number the database cannot store."""

    wide: tuple[str, ...]  # singular uint64/fixed64 fields
    real: tuple[str, ...]  # singular double/float fields
    wide_lists: tuple[str, ...]  # repeated ones, and maps with such values
    real_lists: tuple[str, ...]
    wide_maps: tuple[str, ...]
    real_maps: tuple[str, ...]
    messages: tuple[str, ...]  # singular message fields whose type can hold one
    message_lists: tuple[str, ...]  # repeated such messages
    message_maps: tuple[str, ...]  # maps with such message values

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)


@functools.cache
def _plan(descriptor: Descriptor) -> _Plan:
    parts: dict[str, list[str]] = {name: [] for name in _Plan.__dataclass_fields__}
    for field in descriptor.fields:
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            value = message_type.fields_by_name["value"]
            if value.message_type is not None:
                if _plan(value.message_type):
                    parts["message_maps"].append(field.name)
            elif value.type in _WIDE:
                parts["wide_maps"].append(field.name)
            elif value.type in _REAL:
                parts["real_maps"].append(field.name)
        elif message_type is not None:
            if _plan(message_type):
                parts["message_lists" if field.is_repeated else "messages"].append(field.name)
        elif field.type in _WIDE:
            parts["wide_lists" if field.is_repeated else "wide"].append(field.name)
        elif field.type in _REAL:
            parts["real_lists" if field.is_repeated else "real"].append(field.name)
    return _Plan(**{name: tuple(names) for name, names in parts.items()})


def _suspect(message: Message) -> bool:
    """Whether ``message`` may hold a number the database cannot store: a cheap first
    look (maxima and sums) at every batch, so that only a suspect one is walked field by
    field for the exact path. A sum of finite values can overflow to infinity: such a
    message is only walked, not refused, for that."""
    plan = _plan(message.DESCRIPTOR)
    wide = [getattr(message, name) for name in plan.wide]
    wide += [max(getattr(message, name), default=0) for name in plan.wide_lists]
    wide += [max(getattr(message, name).values(), default=0) for name in plan.wide_maps]
    if wide and max(wide) > INT64_MAX:
        return True
    real = sum(getattr(message, name) for name in plan.real)
    real += sum(sum(getattr(message, name)) for name in plan.real_lists)
    real += sum(sum(getattr(message, name).values()) for name in plan.real_maps)
    if not math.isfinite(real):
        return True
    return (
        any(message.HasField(name) and _suspect(getattr(message, name)) for name in plan.messages)
        or any(_suspect(m) for name in plan.message_lists for m in getattr(message, name))
        or any(_suspect(m) for name in plan.message_maps for m in getattr(message, name).values())
    )


def _number_problem(message: Message, path: str) -> str | None:
    """The first integer beyond INT64_MAX or non-finite double in ``message``, by path."""
    if not _suspect(message):
        return None
    return _number_walk(message, path)


def _number_walk(message: Message, path: str) -> str | None:
    for descriptor, value in message.ListFields():
        name = f"{path}{descriptor.name}"
        if descriptor.message_type is not None:
            if descriptor.message_type.GetOptions().map_entry:
                value_field = descriptor.message_type.fields_by_name["value"]
                if value_field.message_type is not None:
                    for key, item in value.items():
                        found = _number_walk(item, f"{name}[{key!r}].")
                        if found:
                            return found
                    continue
                items = [(f"{name}[{k!r}]", v) for k, v in value.items()]
                kind = value_field.type
            elif descriptor.is_repeated:
                for i, item in enumerate(value):
                    found = _number_walk(item, f"{name}[{i}].")
                    if found:
                        return found
                continue
            else:
                found = _number_walk(value, f"{name}.")
                if found:
                    return found
                continue
        else:
            kind = descriptor.type
            if descriptor.is_repeated:
                items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
            else:
                items = [(name, value)]
        for item_name, item in items:
            wide = kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
            real = kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
            if wide and item > INT64_MAX:
                return f"{item_name} = {item} is beyond the largest storable value 2**63-1"
            if real and not math.isfinite(item):
                return f"{item_name} = {item} is not a finite number"
    return None


def _sha_problem(name: str, value: str) -> str | None:
    if value and not _SHA256.fullmatch(value):
        return f"{name} must be empty or 64 lowercase hex digits, not {value[:80]!r}"
    return None


def _text_problem(name: str, value: str, limit: int = MAX_TEXT) -> str | None:
    if len(value) > limit:
        return f"{name} is {len(value)} characters, more than {limit}"
    return None


def agent_id_problem(agent_id: str) -> str | None:
    if not agent_id:
        return "Register.agent_id is empty"
    if len(agent_id) > MAX_AGENT_ID or not _AGENT_ID.fullmatch(agent_id):
        return (
            f"agent_id {agent_id[:80]!r} is not a valid id: up to {MAX_AGENT_ID} printable "
            "characters, without control characters or surrounding spaces"
        )
    return None


def _first(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)


def register_problem(register: fleet_pb2.Register) -> str | None:
    """Why this Register cannot be stored, or None."""
    labels = register.labels
    return _first(
        agent_id_problem(register.agent_id),
        f"Register has {len(labels)} labels, more than {MAX_LABELS}"
        if len(labels) > MAX_LABELS
        else None,
        *(_text_problem(f"label {k[:40]!r}", k + v, 2 * MAX_TEXT) for k, v in labels.items()),
        f"Register lists {len(register.inventory)} devices, more than {MAX_DEVICES}"
        if len(register.inventory) > MAX_DEVICES
        else None,
        _text_problem("Register.backend", register.backend),
        _text_problem("Register.version", register.version),
        _sha_problem("Register.program_sha256", register.program_sha256),
        _sha_problem("Register.previous_sha256", register.previous_sha256),
        _number_problem(register, "Register."),
    )


def heartbeat_problem(beat: fleet_pb2.Heartbeat) -> str | None:
    return _first(
        _sha_problem("Heartbeat.program_sha256", beat.program_sha256),
        _sha_problem("Heartbeat.shadow_sha256", beat.shadow_sha256),
        _text_problem("Heartbeat.health", beat.health),
    )


def install_problem(report: fleet_pb2.InstallReport) -> str | None:
    return _first(
        _sha_problem("InstallReport.sha256", report.sha256),
        _text_problem("InstallReport.reason", report.reason),
        _number_problem(report, "InstallReport."),
    )


def telemetry_problem(
    batch: fleet_pb2.TelemetryBatch, limits: TelemetryLimits, size: int | None = None
) -> str | None:
    """Why this batch is refused (it is then acked as refused, never stored), or None.
    ``size``: its ``ByteSize()``, when the caller has it already."""
    if size is None:
        size = batch.ByteSize()
    if limits.max_batch_bytes and size > limits.max_batch_bytes:
        return (
            f"batch {batch.seq} is {size} bytes, more than telemetry_max_batch_bytes "
            f"({limits.max_batch_bytes})"
        )
    if batch.seq == 0:
        return "TelemetryBatch.seq is 0: sequence numbers start at 1"
    return _first(
        _number_problem(batch, "TelemetryBatch."),
        _sha_problem("TelemetryBatch.program_sha256", batch.program_sha256),
        _sha_problem("TelemetryBatch.shadow_sha256", batch.shadow_sha256),
        _text_problem("TelemetryBatch.backend", batch.backend),
    )
