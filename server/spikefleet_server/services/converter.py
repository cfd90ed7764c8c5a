"""ConverterService: receive an upload, convert it in the worker pool, sign and store.

Every refusal happens before anything reaches the registry, and the upload's
temporary directory is removed whatever happens (a crash leaves it to the next
start's clean-up).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import grpc
import structlog

from spikefleet.errors import RegistryError
from spikefleet.v1 import converter_pb2, converter_pb2_grpc
from spikefleet_server.conversion import ConversionJob, ConversionOutcome, ConversionPool
from spikefleet_server.metrics import Metrics
from spikefleet_server.registry import Registry, check_name
from spikefleet_server.services.messages import program_info

log = structlog.get_logger("spikefleet_server.converter")

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".nir")
_SHA = re.compile(r"^[0-9a-f]{64}$")

UPLOAD_SHARE = 0.3  # of the overall progress fraction


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


def _progress(stage: str, fraction: float, message: str) -> converter_pb2.ConvertReply:
    return converter_pb2.ConvertReply(
        progress=converter_pb2.ConvertProgress(
            stage=stage, fraction=min(1.0, fraction), message=message
        )
    )


class ConverterServicer(converter_pb2_grpc.ConverterServiceServicer):
    def __init__(
        self,
        registry: Registry,
        pool: ConversionPool,
        uploads: Path,
        max_upload_bytes: int,
        metrics: Metrics,
    ) -> None:
        self.registry = registry
        self.pool = pool
        self.uploads = uploads
        self.max_upload_bytes = max_upload_bytes
        self.metrics = metrics
        uploads.mkdir(parents=True, exist_ok=True)

    def Convert(
        self, request_iterator: Iterator[converter_pb2.ConvertRequest], context: Any
    ) -> Iterator[converter_pb2.ConvertReply]:
        workdir = self.uploads / uuid.uuid4().hex
        try:
            yield from self._convert(request_iterator, workdir)
        except _Refused as refused:
            self.metrics.conversions.labels("failed").inc()
            self.metrics.conversion_failures.labels(refused.reason).inc()
            log.warning("convert.refused", reason=refused.reason, message=str(refused))
            self._abort(context, refused)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    @staticmethod
    def _abort(context: Any, refused: _Refused) -> NoReturn:
        context.abort(refused.code, str(refused))
        raise AssertionError("unreachable")

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
        if not filename or Path(filename).suffix.lower() not in MODEL_SUFFIXES:
            raise _Refused(
                invalid,
                "bad-options",
                f"unsupported model file {options.filename!r}: upload one of "
                f"{', '.join(MODEL_SUFFIXES)} (a bundle from spikefleet.extract, a state_dict "
                "with --arch, or a NIR graph)",
            )
        if options.total_size > self.max_upload_bytes:
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too-large",
                f"upload of {options.total_size} bytes exceeds the server's limit of "
                f"{self.max_upload_bytes} bytes (max_upload_bytes)",
            )
        if options.total_size == 0:
            raise _Refused(invalid, "bad-options", "empty upload: total_size is 0")
        if not _SHA.match(options.upload_sha256):
            raise _Refused(
                invalid, "bad-options", "upload_sha256 must be the 64-hex sha256 of the file"
            )
        if options.weights_bits not in (0, 2, 4, 8):
            raise _Refused(
                invalid, "bad-options", f"weights_bits {options.weights_bits}: use 2, 4 or 8"
            )
        return options

    def _receive(
        self,
        request_iterator: Iterator[converter_pb2.ConvertRequest],
        options: converter_pb2.ConvertOptions,
        path: Path,
    ) -> Iterator[converter_pb2.ConvertReply]:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        digest = hashlib.sha256()
        received = 0
        next_report = 0.1
        with path.open("wb") as handle:
            for request in request_iterator:
                if request.WhichOneof("part") != "chunk":
                    raise _Refused(invalid, "bad-options", "options sent twice in one upload")
                received += len(request.chunk)
                if received > self.max_upload_bytes:
                    raise _Refused(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "too-large",
                        f"upload exceeds the server's limit of {self.max_upload_bytes} bytes "
                        "(max_upload_bytes)",
                    )
                if received > options.total_size:
                    raise _Refused(
                        invalid,
                        "corrupt-upload",
                        f"upload is longer than announced: more than {options.total_size} bytes",
                    )
                handle.write(request.chunk)
                digest.update(request.chunk)
                if received / options.total_size >= next_report:
                    next_report += 0.1
                    yield _progress(
                        "upload",
                        UPLOAD_SHARE * received / options.total_size,
                        f"received {received} of {options.total_size} bytes",
                    )
        if received < options.total_size:
            raise _Refused(
                invalid,
                "truncated",
                f"truncated upload: received {received} of {options.total_size} bytes; "
                "send the whole file again",
            )
        if digest.hexdigest() != options.upload_sha256:
            raise _Refused(
                invalid,
                "corrupt-upload",
                "upload is corrupt: its sha256 does not match upload_sha256; send it again",
            )

    def _convert(
        self, request_iterator: Iterator[converter_pb2.ConvertRequest], workdir: Path
    ) -> Iterator[converter_pb2.ConvertReply]:
        options = self._options(next(request_iterator, None))
        workdir.mkdir()
        path = workdir / Path(options.filename).name
        log.info(
            "convert.upload_started",
            name=options.name,
            filename=path.name,
            total_size=options.total_size,
        )
        yield from self._receive(request_iterator, options, path)
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
        )
        outcome: ConversionOutcome | None = None
        for event in self.pool.run(job):
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
        record = self.registry.put(
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
            result=converter_pb2.ConvertResult(program=program_info(record))
        )


def _reason(kind: str) -> str:
    """Exception class name -> metric label (IncompatibleModelError -> incompatible-model)."""
    words = re.findall(r"[A-Z][a-z]*", kind.removesuffix("Error")) or ["conversion"]
    return "-".join(w.lower() for w in words)
