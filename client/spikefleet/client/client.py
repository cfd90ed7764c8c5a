"""Client: one gRPC channel, bearer token on every call, errors as named exceptions."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from spikefleet.client.errors import from_rpc_error
from spikefleet.client.resolve import assignment_target, is_sha256, resolve_id, resolve_program
from spikefleet.client.rollouts import AgentSummary, RolloutsClient
from spikefleet.client.tls import ClientTLS, bearer_metadata, open_channel, use_tls
from spikefleet.errors import InvalidRequestError, ServerError, SpikefleetError
from spikefleet.events.spec import InputSpec
from spikefleet.v1 import (
    converter_pb2,
    converter_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from spikefleet.wire.converter import ConvertProgress
from spikefleet.wire.fleet import Assignment, DeletedAgent
from spikefleet.wire.registry import ProgramInfo

if TYPE_CHECKING:
    from spikefleet.client.telemetry import TelemetrySummary

CHUNK = 256 * 1024


class Programs:
    """The registry: ``client.programs``."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = registry_pb2_grpc.RegistryServiceStub(client.channel)

    def list(
        self,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        latest_only: bool = False,
    ) -> list[ProgramInfo]:
        request = registry_pb2.ListProgramsRequest(
            name=name or "", labels=dict(labels or {}), latest_only=latest_only
        )
        reply = self._client._call(self._stub.List, request)
        return [ProgramInfo.from_proto(p) for p in reply.programs]

    def resolve(self, ref: str, version: int | None = None) -> ProgramInfo:
        """The program ``ref`` names: a name (its latest version, or ``version``),
        ``name@version``, a sha256 or a unique prefix of one (4+ hex digits).

        Raises NotFoundError, or AmbiguousReferenceError listing the candidates."""
        if version is None and is_sha256(ref.strip()):
            return self.describe(ref)
        return resolve_program(ref, self.list(), version)

    def _sha256(self, ref: str, version: int | None) -> registry_pb2.ProgramRef:
        ref = ref.strip()
        if version is None and is_sha256(ref):
            return registry_pb2.ProgramRef(sha256=ref.lower())
        return registry_pb2.ProgramRef(sha256=self.resolve(ref, version).sha256)

    def describe(self, ref: str, version: int | None = None) -> ProgramInfo:
        """The stored record of the program ``ref`` names (see :meth:`resolve`)."""
        return ProgramInfo.from_proto(
            self._client._call(self._stub.Describe, self._sha256(ref, version))
        )

    def get(self, ref: str, version: int | None = None) -> bytes:
        """The signed program (a SignedProgram envelope), checked against its sha256: the
        digest of the program bytes it holds must equal both the envelope's claim and the
        sha256 the server announced (a program changed in the registry after it was
        signed is refused here, not saved)."""
        parts: list[bytes] = []
        info: ProgramInfo | None = None
        for message in self._client._stream(self._stub.Get, self._sha256(ref, version)):
            if message.HasField("info"):
                info = ProgramInfo.from_proto(message.info)
            parts.append(message.chunk)
        data = b"".join(parts)
        check_program_bytes(ref, data, info)
        return data

    def delete(self, ref: str, version: int | None = None) -> ProgramInfo:
        reply = self._client._call(self._stub.Delete, self._sha256(ref, version))
        return ProgramInfo.from_proto(reply.deleted)

    def trusted_keys(self) -> dict[str, bytes]:
        """key id -> PEM of the public keys the server signs with."""
        reply = self._client._call(self._stub.TrustedKeys, registry_pb2.TrustedKeysRequest())
        return {k.key_id: bytes(k.pem) for k in reply.keys}


def check_program_bytes(ref: str, data: bytes, info: ProgramInfo | None) -> None:
    """Refuse a fetched program unless it is complete and the sha256 of the program bytes
    it holds equals both the sha256 the server announced and its envelope's claim (a
    registry file changed after it was signed is refused, not saved)."""
    from spikefleet.errors import SignatureError
    from spikefleet.program.signing import SignedProgram

    if info is None or len(data) != info.size:
        raise ServerError(f"program {ref} arrived incomplete ({len(data)} bytes); retry")
    try:
        envelope = SignedProgram.from_bytes(data)
    except SignatureError as exc:
        raise ServerError(f"program {ref} is not a signed program envelope: {exc}") from None
    actual = hashlib.sha256(envelope.program).hexdigest()
    if envelope.sha256 != info.sha256 or actual != info.sha256:
        raise ServerError(
            f"program {ref}: its bytes hash to {actual}, but the server announced "
            f"{info.sha256} (and the envelope claims {envelope.sha256}): the registry copy "
            "is damaged or was tampered with; nothing was saved"
        )


class Client:
    """A connection to spikefleet-server; ``token`` is sent as a bearer token.

    TLS unless the address is loopback (``tls=None``, the default; system roots verify
    the server unless a :class:`ClientTLS` names a CA); ``tls=False`` chooses plaintext
    explicitly, which the server accepts on loopback only."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: ClientTLS | bool | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = bearer_metadata(token)
        self.secure = use_tls(address, tls)
        self.channel = open_channel(address, tls)
        self.programs = Programs(self)
        self.rollouts = RolloutsClient(self.channel, self._metadata, timeout, address)
        self._converter = converter_pb2_grpc.ConverterServiceStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def agents(self, selector: Mapping[str, str] | None = None) -> list[AgentSummary]:
        """The agents the server knows (those whose labels match ``selector``)."""
        return self.rollouts.agents(dict(selector) if selector else None)

    def resolve_agent(self, ref: str) -> str:
        """The id of the known agent ``ref`` names: its id or a unique prefix of it."""
        return resolve_id(ref, self.agents(), lambda a: a.agent_id, what="agent").agent_id

    def assign(
        self,
        agent: str,
        program: str = "",
        *,
        shadow: str = "",
        rollback: bool = False,
    ) -> Assignment:
        """Make ``program`` (any name :meth:`Programs.resolve` takes) the desired program of
        ``agent`` (an id or unique prefix; an id the server has not seen yet is kept for
        when that agent registers), bypassing rollout gates; ``shadow`` runs a candidate
        beside it; ``rollback`` goes back to the agent's previous program. Admin only."""
        if not program and not rollback:
            raise SpikefleetError("assign needs a program, or rollback=True")
        agent = assignment_target(agent, [a.agent_id for a in self.agents()])
        sha256 = self.programs.resolve(program).sha256 if program else ""
        shadow_sha256 = self.programs.resolve(shadow).sha256 if shadow else ""
        request = fleet_pb2.AssignRequest(
            agent_id=agent, sha256=sha256, shadow_sha256=shadow_sha256, rollback=rollback
        )
        reply = self._call(fleet_pb2_grpc.FleetAdminStub(self.channel).Assign, request)
        return Assignment.from_proto(request, reply)

    def telemetry(
        self,
        *,
        since: int | str | None = None,
        until: int | str | None = None,
        agents: Sequence[str] = (),
        programs: Sequence[str] = (),
    ) -> TelemetrySummary:
        """What agents reported, summed up per agent and per program by the server.

        ``since``/``until`` are unix ms or text such as ``"1h"`` (ago) or an ISO time
        (the period each batch covers must end inside; default: everything stored, up
        to now). ``agents`` take ids or unique prefixes, ``programs`` anything
        :meth:`Programs.resolve` takes; given, only their periods count."""
        from spikefleet.client.telemetry import TelemetrySummary, unix_ms
        from spikefleet.v1 import telemetry_pb2, telemetry_pb2_grpc

        request = telemetry_pb2.TelemetryQueryRequest(
            since_unix_ms=unix_ms(since),
            until_unix_ms=unix_ms(until),
            agent_ids=[self.resolve_agent(a) for a in agents],
            program_sha256s=[self.programs.resolve(p).sha256 for p in programs],
        )
        stub = telemetry_pb2_grpc.TelemetryQueryStub(self.channel)
        return TelemetrySummary.from_proto(self._call(stub.Summarize, request))

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.address) from None

    def _stream(self, method: Any, request: Any) -> Iterator[Any]:
        try:
            yield from method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.address) from None

    def delete_agent(self, agent_id: str, *, force: bool = False) -> DeletedAgent:
        """Forget an agent at the server (admin): its record, desired program, installs
        and telemetry. A connected agent is refused unless ``force`` (which ends its stream;
        it registers again unless its token is revoked)."""
        stub = fleet_pb2_grpc.FleetAdminStub(self.channel)
        reply = self._call(
            stub.DeleteAgent, fleet_pb2.DeleteAgentRequest(agent_id=agent_id, force=force)
        )
        return DeletedAgent.from_proto(agent_id, reply)

    def convert(
        self,
        model: str | os.PathLike[str] | Any,
        *,
        sample: Any = None,
        name: str | None = None,
        arch: str | None = None,
        labels: Mapping[str, str] | None = None,
        class_labels: Sequence[str] = (),
        weights_bits: int | None = None,
        allow_beta: bool = False,
        allow_shift: bool = False,
        calibration: np.ndarray | None = None,
        calibration_labels: np.ndarray | None = None,
        input_shape: tuple[int, int, int] | None = None,
        input_scale: float | None = None,
        clip: str = "auto",
        hardware: bool = True,
        input_spec: InputSpec | None = None,
        on_progress: Callable[[ConvertProgress], None] | None = None,
        timeout: float | None = 3600.0,
    ) -> ProgramInfo:
        """Upload a model, let the server convert, sign and store it; the stored
        program's record (fetch its bytes with ``programs.get(info.sha256)``).

        ``model`` is a model file, or a torch ``nn.Module`` with ``sample``, one input
        batch as the module takes it (float (N, C, H, W) event counts): the module is
        recorded with :func:`spikefleet.extract` and that bundle is uploaded. ``name``
        defaults to the file's name without extensions (``digits.bundle.safetensors``
        -> ``digits``) or the module's class name; ``calibration`` (uint8 frames) and
        ``calibration_labels`` travel with the model so the server measures fidelity."""
        with contextlib.ExitStack() as stack:
            source, default_name = _model_file(model, sample, stack)
            size = source.stat().st_size
            digest = hashlib.sha256()
            with source.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            calib = _calibration_npz(calibration, calibration_labels)
            options = converter_pb2.ConvertOptions(
                filename=source.name,
                arch=arch or "",
                name=name or default_name,
                labels=dict(labels or {}),
                weights_bits=weights_bits or 0,
                allow_beta=allow_beta,
                total_size=size,
                upload_sha256=digest.hexdigest(),
                class_labels=list(class_labels),
                calibration_size=len(calib),
                calibration_sha256=hashlib.sha256(calib).hexdigest() if calib else "",
                input_shape=list(input_shape or ()),
                input_scale=input_scale or 0.0,
                allow_shift=allow_shift,
                clip=clip,
                no_hardware=not hardware,
                input_spec_json=input_spec.to_json() if input_spec is not None else "",
            )

            def requests() -> Iterator[converter_pb2.ConvertRequest]:
                yield converter_pb2.ConvertRequest(options=options)
                with source.open("rb") as handle:
                    for block in iter(lambda: handle.read(CHUNK), b""):
                        yield converter_pb2.ConvertRequest(chunk=block)
                for start in range(0, len(calib), CHUNK):
                    yield converter_pb2.ConvertRequest(
                        calibration_chunk=calib[start : start + CHUNK]
                    )

            result: ProgramInfo | None = None
            try:
                for reply in self._converter.Convert(
                    requests(), metadata=self._metadata, timeout=timeout
                ):
                    if reply.HasField("progress") and on_progress is not None:
                        on_progress(ConvertProgress.from_proto(reply.progress))
                    elif reply.HasField("result"):
                        result = ProgramInfo.from_proto(reply.result.program)
            except grpc.RpcError as error:
                raise from_rpc_error(error, self.address) from None
            if result is None:
                raise InvalidRequestError("the server ended the conversion without a result")
            return result


def _model_file(model: Any, sample: Any, stack: contextlib.ExitStack) -> tuple[Path, str]:
    """The file to upload for ``model`` and the program name it suggests."""
    from spikefleet.convert.loaders import model_name

    if isinstance(model, str | os.PathLike):
        source = Path(model)
        if sample is not None:
            raise SpikefleetError(
                "sample is for converting an nn.Module; a model file needs none "
                "(give arch or input_shape for weights without shapes)"
            )
        if not source.is_file():
            raise SpikefleetError(
                f"{source}: no such model file (a directory must be converted locally)"
            )
        return source, model_name(source)
    if sample is None:
        raise SpikefleetError(
            f"converting a {type(model).__name__} needs sample, one input batch as it "
            "takes it (e.g. torch.zeros(1, 2, 34, 34)), or pass a model file"
        )
    from spikefleet.convert.extraction import extract

    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="spikefleet-")))
    bundle = folder / "model.safetensors"
    extract(model, sample, bundle)
    return bundle, type(model).__name__


def _calibration_npz(frames: np.ndarray | None, labels: np.ndarray | None) -> bytes:
    if frames is None:
        if labels is not None:
            raise SpikefleetError("calibration labels were given without calibration frames")
        return b""
    buffer = io.BytesIO()
    arrays = {"frames": np.asarray(frames)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()
