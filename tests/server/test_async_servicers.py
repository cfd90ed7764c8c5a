"""Servicer methods are coroutines on the server's one event loop: a stream the caller
cancels ends the method (its ``finally`` runs) and runs its done callbacks, and a
refusal reaches the caller only after the method's ``finally`` has run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.server import RunningServer, config_values, serve_app

from spikefleet_server.app import ServerApp
from spikefleet_server.config import load_config
from spikefleet_server.rpc import Refusal

SERVICE = "test.Async"


class Servicer:
    def __init__(self) -> None:
        self.ended = threading.Event()
        self.callback_ran = threading.Event()
        self.cleaned_up = threading.Event()

    async def ticks(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        context.add_done_callback(lambda _: self.callback_ran.set())
        try:
            while True:
                yield b"tick"
                await asyncio.sleep(0.01)
        finally:
            self.ended.set()

    async def fail(self, request: bytes, context: Any) -> bytes:
        try:
            raise Refusal(grpc.StatusCode.FAILED_PRECONDITION, "refused on purpose")
        finally:
            await asyncio.sleep(0.2)  # slow cleanup: the caller must not hear the status before it
            self.cleaned_up.set()
        return b""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RunningServer, Servicer]]:
    servicer = Servicer()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Ticks": grpc.unary_stream_rpc_method_handler(servicer.ticks),
            "Fail": grpc.unary_unary_rpc_method_handler(servicer.fail),
        },
    )
    config = load_config(None, environ={}, overrides=config_values(tmp_path / "data"))
    app = ServerApp(config)
    app.add_service(
        SERVICE,
        lambda server: server.add_generic_rpc_handlers((handler,)),
        {"Ticks": None, "Fail": None},
    )
    with serve_app(app, grace=1) as running:
        yield running, servicer


def test_a_cancelled_stream_ends_the_method_and_runs_its_callbacks(
    served: tuple[RunningServer, Servicer],
) -> None:
    running, servicer = served
    with grpc.insecure_channel(running.address) as channel:
        call = channel.unary_stream(f"/{SERVICE}/Ticks")(b"")
        assert [next(call), next(call)] == [b"tick", b"tick"]
        call.cancel()
        assert servicer.callback_ran.wait(30)
        assert servicer.ended.wait(30), "the method kept running after the caller left"


def test_a_refusal_reaches_the_caller_after_the_method_cleaned_up(
    served: tuple[RunningServer, Servicer],
) -> None:
    running, servicer = served
    with grpc.insecure_channel(running.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(f"/{SERVICE}/Fail")(b"", timeout=30)
        assert servicer.cleaned_up.is_set()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "refused on purpose"


def test_a_blocking_servicer_method_is_refused_by_name(tmp_path: Path) -> None:
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Sync": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")}
    )
    config = load_config(None, environ={}, overrides=config_values(tmp_path / "data"))
    app = ServerApp(config)
    app.add_service(
        SERVICE, lambda server: server.add_generic_rpc_handlers((handler,)), {"Sync": None}
    )
    with (
        serve_app(app, grace=1) as running,
        grpc.insecure_channel(running.address) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        channel.unary_unary(f"/{SERVICE}/Sync")(b"", timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
