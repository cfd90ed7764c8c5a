"""ConverterService: receive an upload, convert it in the worker pool, sign and store.

Every refusal happens before anything reaches the registry, and the upload's
temporary directory is removed whatever happens (a crash leaves it to the next
start's clean-up).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import grpc
import structlog

from spikefleet.errors import RegistryError
from spikefleet.events.spec import InputSpecError, parse_input_spec
from spikefleet.v1 import converter_pb2, converter_pb2_grpc
from spikefleet.wire.converter import ConvertProgress
from spikefleet_server.conversion import ConversionJob, ConversionOutcome, ConversionPool
from spikefleet_server.metrics import Metrics
from spikefleet_server.registry import check_name
from spikefleet_server.rpc import Refusal
from spikefleet_server.storage.areas import ProgramStorage

log = structlog.get_logger("spikefleet_server.converter")

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".nir")
_SHA = re.compile(r"^[0-9a-f]{64}$")

UPLOAD_SHARE = 0.3  # of the overall progress fraction


class _Part:
    """One file of an upload (the model, the calibration data), checked as it arrives."""

    def __init__(self, what: str, path: Path, size: int, sha256: str) -> None:
        self.what, self.path, self.size, self.sha256 = what, path, size, sha256
        self.received = 0
        self.digest = hashlib.sha256()
        self.handle: Any = None

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.size:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "corrupt-upload",
                f"{self.what} upload is longer than announced: more than {self.size} bytes",
            )
        if self.handle is None:
            self.handle = self.path.open("wb")
        self.handle.write(data)
        self.digest.update(data)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()

    def check(self) -> None:
        if self.received < self.size:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "truncated",
                f"truncated upload: received {self.received} of {self.size} bytes of the "
                f"{self.what}; send the whole file again",
            )
        if self.size and self.digest.hexdigest() != self.sha256:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "corrupt-upload",
                f"{self.what} upload is corrupt: its sha256 does not match the announced one; "
                "send it again",
            )


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


def _progress(stage: str, fraction: float, message: str) -> converter_pb2.ConvertReply:
    return converter_pb2.ConvertReply(progress=ConvertProgress(stage, fraction, message).to_proto())


class ConverterServicer(converter_pb2_grpc.ConverterServiceServicer):
    def __init__(
        self,
        registry: ProgramStorage,
        pool: ConversionPool,
        uploads: Path,
        max_upload_bytes: int,
        metrics: Metrics,
        convert_timeout: float | None = None,
    ) -> None:
        self.registry = registry
        self.pool = pool
        self.uploads = uploads
        self.max_upload_bytes = max_upload_bytes
        self.metrics = metrics
        self.convert_timeout = convert_timeout
        uploads.mkdir(parents=True, exist_ok=True)

    async def Convert(
        self, request_iterator: AsyncIterator[converter_pb2.ConvertRequest], context: Any
    ) -> AsyncIterator[converter_pb2.ConvertReply]:
        workdir = self.uploads / uuid.uuid4().hex
        try:
            async for reply in self._convert(aiter(request_iterator), workdir):
                yield reply
        except _Refused as refused:
            self.metrics.conversions.labels("failed").inc()
            self.metrics.conversion_failures.labels(refused.reason).inc()
            log.warning("convert.refused", reason=refused.reason, message=str(refused))
            await self._abort(context, refused)
        finally:
            # here, not in a thread: a cancelled call's finally may not get to await
            shutil.rmtree(workdir, ignore_errors=True)

    @staticmethod
    async def _abort(context: Any, refused: _Refused) -> NoReturn:
        # the status goes out once Convert has unwound: the upload's files are gone by then
        raise Refusal(refused.code, str(refused))

    def _options(self, first: converter_pb2.ConvertRequest | None) -> converter_pb2.ConvertOptions:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if first is None or first.WhichOneof("part") != "options":
            raise _Refused(invalid, "bad-options", "the first message must carry the options")
        options = first.options
        try:
            check_name(options.name)
        except RegistryError as exc:
            raise _Refused(invalid, "bad-options", str(exc)) from None
        filename = Path(options.filename).name
        suffix = Path(filename).suffix.lower()
        if not filename or (suffix and suffix not in MODEL_SUFFIXES):
            raise _Refused(
                invalid,
                "bad-options",
                f"unsupported model file {options.filename!r}: upload one of "
                f"{', '.join(MODEL_SUFFIXES)} or no suffix (a bundle from spikefleet.extract, "
                "a state_dict with arch=, or a NIR graph; the converter reads the content)",
            )
        announced = options.total_size + options.calibration_size
        if announced > self.max_upload_bytes:
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too-large",
                f"upload of {announced} bytes exceeds the server's limit of "
                f"{self.max_upload_bytes} bytes (max_upload_bytes)",
            )
        if options.total_size == 0:
            raise _Refused(invalid, "bad-options", "empty upload: total_size is 0")
        if not _SHA.match(options.upload_sha256):
            raise _Refused(
                invalid, "bad-options", "upload_sha256 must be the 64-hex sha256 of the file"
            )
        if options.calibration_size and not _SHA.match(options.calibration_sha256):
            raise _Refused(
                invalid,
                "bad-options",
                "calibration_sha256 must be the 64-hex sha256 of the calibration data",
            )
        if len(options.input_shape) not in (0, 3) or 0 in options.input_shape:
            raise _Refused(
                invalid, "bad-options", "input_shape must be three positive numbers H, W, C"
            )
        if options.clip not in ("", "auto", "mse", "max"):
            raise _Refused(
                invalid, "bad-options", f"clip {options.clip!r}: use 'auto', 'mse' or 'max'"
            )
        if not (0 <= options.input_scale < float("inf")):
            raise _Refused(invalid, "bad-options", "input_scale must be a positive number")
        if options.weights_bits > 8:
            raise _Refused(
                invalid, "bad-options", f"weights_bits {options.weights_bits}: at most 8"
            )
        if options.input_spec_json:
            try:
                parse_input_spec(options.input_spec_json, source="input_spec_json")
            except InputSpecError as exc:
                raise _Refused(invalid, "bad-options", str(exc)) from None
        return options

    async def _receive(
        self,
        request_iterator: AsyncIterator[converter_pb2.ConvertRequest],
        options: converter_pb2.ConvertOptions,
        model_path: Path,
        calibration_path: Path,
    ) -> AsyncIterator[converter_pb2.ConvertReply]:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        parts = {
            "chunk": _Part("model", model_path, options.total_size, options.upload_sha256),
            "calibration_chunk": _Part(
                "calibration data",
                calibration_path,
                options.calibration_size,
                options.calibration_sha256,
            ),
        }
        total = options.total_size + options.calibration_size
        received = 0
        next_report = 0.1
        try:
            async for request in request_iterator:
                kind = request.WhichOneof("part")
                if kind not in parts:
                    raise _Refused(invalid, "bad-options", "options sent twice in one upload")
                data = request.chunk if kind == "chunk" else request.calibration_chunk
                received += len(data)
                if received > self.max_upload_bytes:
                    raise _Refused(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "too-large",
                        f"upload exceeds the server's limit of {self.max_upload_bytes} bytes "
                        "(max_upload_bytes)",
                    )
                await asyncio.to_thread(parts[kind].write, data)  # file I/O off the loop
                if received / total >= next_report:
                    next_report += 0.1
                    yield _progress(
                        "upload",
                        UPLOAD_SHARE * received / total,
                        f"received {received} of {total} bytes",
                    )
        finally:
            for part in parts.values():
                part.close()
        for part in parts.values():
            part.check()

    async def _convert(
        self, request_iterator: AsyncIterator[converter_pb2.ConvertRequest], workdir: Path
    ) -> AsyncIterator[converter_pb2.ConvertReply]:
        options = self._options(await anext(request_iterator, None))
        workdir.mkdir()
        path = workdir / Path(options.filename).name
        calibration = workdir / "calibration.npz"
        log.info(
            "convert.upload_started",
            name=options.name,
            filename=path.name,
            total_size=options.total_size,
        )
        async for reply in self._receive(request_iterator, options, path, calibration):
            yield reply
        log.info("convert.received", filename=path.name, size=options.total_size)
        yield _progress("queued", UPLOAD_SHARE, "waiting for a conversion worker")
        started = time.perf_counter()
        job = ConversionJob(
            path=str(path),
            name=options.name,
            arch=options.arch,
            weight_bits=options.weights_bits,
            allow_beta=options.allow_beta,
            class_names=list(options.class_labels),
            calibration=str(calibration) if options.calibration_size else "",
            input_shape=tuple(options.input_shape) if options.input_shape else None,
            input_scale=options.input_scale or None,
            allow_shift=options.allow_shift,
            clip=options.clip or "auto",
            hardware=not options.no_hardware,
            input_spec_json=options.input_spec_json,
        )
        outcome: ConversionOutcome | None = None
        async for event in self.pool.run(job, self.convert_timeout):
            if isinstance(event, ConversionOutcome):
                outcome = event
            else:
                description, fraction = event
                yield _progress(
                    "convert", UPLOAD_SHARE + (0.9 - UPLOAD_SHARE) * fraction, description
                )
        assert outcome is not None
        if not outcome.ok:
            message = outcome.message.replace(f"{workdir}/", "").replace(str(workdir), "upload")
            message = " ".join(message.split())  # one line: layer, reason, fix
            if outcome.error_kind == "timeout":
                raise _Refused(grpc.StatusCode.DEADLINE_EXCEEDED, "timeout", message)
            if outcome.error_kind == "internal":
                log.error("convert.crashed", error=outcome.message)
                raise _Refused(
                    grpc.StatusCode.INTERNAL, "internal", f"conversion failed: {message}"
                )
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                _reason(outcome.error_kind),
                f"cannot convert {path.name}: {message}",
            )
        yield _progress("sign", 0.92, "signing and storing the program")
        record = await self.registry.put(
            outcome.program,
            name=options.name,
            labels=dict(options.labels),
            fidelity=outcome.fidelity,
            source_sha256=options.upload_sha256,
        )
        seconds = time.perf_counter() - started
        self.metrics.conversions.labels("ok").inc()
        self.metrics.conversion_seconds.observe(seconds)
        log.info(
            "convert.stored",
            sha256=record.sha256,
            name=record.name,
            version=record.version,
            seconds=round(seconds, 3),
        )
        yield _progress("store", 1.0, f"stored {record.name} v{record.version}")
        yield converter_pb2.ConvertReply(
            result=converter_pb2.ConvertResult(program=record.to_proto())
        )


def _reason(kind: str) -> str:
    """Exception class name -> metric label (IncompatibleModelError -> incompatible-model)."""
    words = re.findall(r"[A-Z][a-z]*", kind.removesuffix("Error")) or ["conversion"]
    return "-".join(w.lower() for w in words)
