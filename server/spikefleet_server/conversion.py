"""Conversions in a pool of worker processes, so the server's event loop never runs torch.

Workers are started with the ``spawn`` context (no forked gRPC or SQLite state).
Each job reports progress through a queue shared by the workers of one pool
generation (handed over at worker start, the only way a multiprocessing queue
reaches a pool worker); a dispatcher thread routes each event to its job's caller
on the event loop. A pool whose workers were killed (a conversion past its time
limit) is replaced together with its queue: a worker killed mid-write leaves that
queue's lock held and a partial message in its pipe, so it can carry nothing more.
A worker returns a plain tuple rather than raising, so every failure crosses the
process boundary with its kind and message intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

log = structlog.get_logger("spikefleet_server.conversion")

_worker_queue: Any = None


@dataclass(frozen=True)
class ConversionJob:
    path: str
    name: str
    arch: str = ""
    weight_bits: int = 0
    allow_beta: bool = False
    class_names: list[str] = field(default_factory=list)
    calibration: str = ""  # path of an .npz with "frames" (and "labels")
    input_shape: tuple[int, int, int] | None = None
    input_scale: float | None = None
    allow_shift: bool = False
    clip: str = "auto"
    hardware: bool = True
    input_spec_json: str = ""  # spikefleet.events.InputSpec file form; "" = none given


@dataclass(frozen=True)
class ConversionOutcome:
    """``program`` (encoded, unsigned) and ``fidelity`` on success, else ``error_kind``
    (the exception class name) and ``message``."""

    program: bytes = b""
    fidelity: dict[str, Any] = field(default_factory=dict)
    error_kind: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.error_kind


def _init_worker(progress_queue: Any, log_level: str) -> None:
    from spikefleet_server import logs

    global _worker_queue
    _worker_queue = progress_queue
    # Progress is best effort: a worker must exit even when the queue cannot be flushed
    # (a sibling killed mid-write leaves its lock held).
    progress_queue.cancel_join_thread()
    logs.configure(log_level)
    _exit_with_parent()


def _exit_with_parent() -> None:
    """End this worker when the server dies. A worker holds both ends of its pool's call
    queue, so after a kill -9 of the server its read never sees end-of-file: without
    this watch it (and the resource tracker it keeps open) lived on for good."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def check_finite(path: str, arch: str, input_shape: tuple[int, int, int] | None = None) -> None:
    """Refuse NaN or Inf parameters before converting (quantization would turn them
    into arbitrary integers)."""
    import dataclasses

    import numpy as np

    from spikefleet.convert.loaders import load_graph
    from spikefleet.errors import ConversionError

    graph = load_graph(path, arch or None, input_shape)
    for node in graph.nodes:
        for item in dataclasses.fields(node):
            value = getattr(node, item.name)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                bad = int(np.count_nonzero(~np.isfinite(value)))
                if bad:
                    raise ConversionError(
                        f"layer {node.name!r}: {item.name} has {bad} NaN or Inf value(s); "
                        "fix the training run (diverged?) and export the weights again"
                    )


def load_calibration(path: str) -> tuple[Any, Any]:
    """(frames, labels or None) from an uploaded .npz; never unpickles."""
    import zipfile

    import numpy as np

    from spikefleet.errors import ConversionError

    try:
        with np.load(path, allow_pickle=False) as data:
            if "frames" not in data.files:
                raise ConversionError(
                    f"calibration data has no 'frames' array (it has {sorted(data.files)})"
                )
            frames = data["frames"]
            labels = data["labels"] if "labels" in data.files else None
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ConversionError(f"calibration data is not a readable .npz ({exc})") from None
    return frames, labels


def run_job(job_id: str, job: ConversionJob) -> ConversionOutcome:
    """Runs in a worker process."""
    from spikefleet.errors import SpikefleetError

    def progress(description: str, done: int, total: int) -> None:
        if _worker_queue is not None:
            _worker_queue.put((job_id, description, done / total if total else 0.0))

    try:
        from spikefleet.convert import ConvertOptions, convert
        from spikefleet.events.spec import parse_input_spec

        frames, labels = load_calibration(job.calibration) if job.calibration else (None, None)
        shape = job.input_shape
        if shape is None and frames is not None and frames.ndim >= 3:
            h, w, c = (int(n) for n in frames.shape[-3:])  # as convert() derives it
            shape = (h, w, c)
        check_finite(job.path, job.arch, shape)
        options = ConvertOptions(
            name=job.name,
            allow_beta=job.allow_beta,
            allow_shift=job.allow_shift,
            class_names=list(job.class_names),
            input_shape=job.input_shape,
            input_scale=job.input_scale,
            clip={"mse": "mse", "max": "max"}.get(job.clip, "auto"),  # type: ignore[arg-type]
            hardware=job.hardware,
            input_spec=parse_input_spec(job.input_spec_json) if job.input_spec_json else None,
        )
        if job.weight_bits:
            options = replace(options, weight_bits=job.weight_bits)
        result = convert(
            job.path,
            arch=job.arch or None,
            calibration=frames,
            labels=labels,
            options=options,
            progress=progress,
        )
    except SpikefleetError as exc:
        return ConversionOutcome(error_kind=type(exc).__name__, message=str(exc))
    except Exception as exc:  # the model is untrusted input: report, never crash the pool
        return ConversionOutcome(error_kind="internal", message=f"{type(exc).__name__}: {exc}")
    fidelity: dict[str, Any] = (
        result.report.to_dict() if result.report is not None else {"notes": result.notes}
    )
    return ConversionOutcome(program=result.data, fidelity=fidelity)


class _LoopQueue:
    """A job's progress events, put by the dispatcher thread, read on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()

    def put(self, item: tuple[str, float] | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


@dataclass
class _Generation:
    """A pool of workers with the progress queue they were started with."""

    pool: ProcessPoolExecutor
    events: Any
    dispatcher: threading.Thread | None = None


class ConversionPool:
    def __init__(self, workers: int, log_level: str = "info") -> None:
        self.workers = workers
        self.log_level = log_level
        self._context = multiprocessing.get_context("spawn")
        self._listeners: dict[str, _LoopQueue] = {}
        self._lock = threading.Lock()
        self._generation: _Generation | None = None
        self._closed = False

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._generation is None:
                events = self._context.Queue()
                pool = ProcessPoolExecutor(
                    self.workers,
                    mp_context=self._context,
                    initializer=_init_worker,
                    initargs=(events, self.log_level),
                )
                generation = _Generation(pool, events)
                generation.dispatcher = threading.Thread(
                    target=self._dispatch, args=(events,), name="conversion-progress", daemon=True
                )
                generation.dispatcher.start()
                self._generation = generation
            return self._generation.pool

    def _dispatch(self, events: Any) -> None:
        while True:
            try:
                item = events.get()
            except (EOFError, OSError):  # the queue was closed under us
                return
            if item is None:
                return
            job_id, description, fraction = item
            listener = self._listeners.get(job_id)
            if listener is not None:
                listener.put((description, fraction))

    async def run(
        self, job: ConversionJob, timeout: float | None = None
    ) -> AsyncIterator[tuple[str, float] | ConversionOutcome]:
        """Progress events ``(description, fraction)`` of the job, then its outcome.

        ``timeout`` counts from the job's start in a worker (not its wait in the
        queue); past it the pool's workers are killed, since a running conversion
        cannot be cancelled otherwise (other running jobs then fail as well).
        """
        job_id = uuid.uuid4().hex
        events = _LoopQueue(asyncio.get_running_loop())
        self._listeners[job_id] = events
        try:
            pool, future = self._submit(job_id, job)
            future.add_done_callback(lambda _: events.put(None))
            deadline: float | None = None
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    event = await asyncio.wait_for(events.queue.get(), wait)
                except TimeoutError:
                    self._kill(pool)
                    yield ConversionOutcome(
                        error_kind="timeout",
                        message=f"conversion ran longer than {timeout:g} s "
                        "(convert_timeout_seconds) and was stopped",
                    )
                    return
                if event is None:
                    break
                if deadline is None and timeout:
                    deadline = time.monotonic() + timeout
                yield event
            await asyncio.sleep(0)  # progress the dispatcher routed just before the end
            while not events.queue.empty():
                late = events.queue.get_nowait()
                if late is not None:
                    yield late
            try:
                yield future.result()
            except BrokenProcessPool:
                self._discard(pool)
                yield ConversionOutcome(
                    error_kind="internal",
                    message="the conversion worker died (out of memory, or stopped); "
                    "see the server log",
                )
        finally:
            del self._listeners[job_id]

    def _submit(
        self, job_id: str, job: ConversionJob
    ) -> tuple[ProcessPoolExecutor, Future[ConversionOutcome]]:
        pool = self._executor()
        try:
            return pool, pool.submit(run_job, job_id, job)
        except BrokenProcessPool:
            self._discard(pool)
            pool = self._executor()
            return pool, pool.submit(run_job, job_id, job)

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Forget a broken pool and its progress queue (once, however many of its jobs
        notice); the next job starts a new generation."""
        with self._lock:
            generation = self._generation
            if generation is None or generation.pool is not pool:
                return
            self._generation = None
        pool.shutdown(wait=False, cancel_futures=True)
        self._retire(generation)
        log.warning("conversion.pool_restarted")

    @staticmethod
    def _retire(generation: _Generation) -> None:
        """End a generation's dispatcher without waiting on its queue: the queue may be
        wedged by a killed writer, and its dispatcher (a daemon thread) then waits
        until the process ends, holding nothing else."""
        generation.events.put(None)
        generation.events.cancel_join_thread()

    def _kill(self, pool: ProcessPoolExecutor) -> None:
        processes = list(getattr(pool, "_processes", None) or {})
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
        log.warning("conversion.workers_killed", pids=processes)
        self._discard(pool)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the workers, waiting up to ``timeout`` seconds before killing the rest: a
        worker killed mid-write (a conversion past its time limit) can leave the progress
        queue's lock held, and the others' queue threads then never let them exit."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            generation, self._generation = self._generation, None
        if generation is None:
            return
        processes = list((getattr(generation.pool, "_processes", None) or {}).values())
        generation.pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("conversion.worker_killed_at_shutdown", pid=process.pid)
                process.kill()
                process.join(1)
        self._retire(generation)
        if generation.dispatcher is not None:
            generation.dispatcher.join(timeout=2)
