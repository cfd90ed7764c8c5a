"""Blocking servicer methods on the grpc.aio server keep the sync stack's contract:
``is_active()`` turns False and ``add_callback`` callbacks run when the caller goes away,
and an abort reaches the caller only after the method's ``finally`` has run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from server_helpers import config_values

from spikefleet_server.app import ServerApp
from spikefleet_server.config import load_config

SERVICE = "test.Blocking"


class Blocking:
    def __init__(self) -> None:
        self.ended = threading.Event()
        self.callback_ran = threading.Event()
        self.cleaned_up = threading.Event()

    def ticks(self, request: bytes, context: Any) -> Iterator[bytes]:
        context.add_callback(self.callback_ran.set)
        while context.is_active():
            yield b"tick"
            time.sleep(0.01)
        self.ended.set()

    def fail(self, request: bytes, context: Any) -> bytes:
        try:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "refused on purpose")
        finally:
            time.sleep(0.2)  # slow cleanup: the caller must not hear the status before it
            self.cleaned_up.set()
        return b""


@pytest.fixture
def blocking(tmp_path: Path) -> Iterator[tuple[ServerApp, Blocking]]:
    servicer = Blocking()
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
    app.start()
    yield app, servicer
    app.stop(grace=1)


def test_a_cancelled_stream_ends_the_method_and_runs_its_callbacks(
    blocking: tuple[ServerApp, Blocking],
) -> None:
    app, servicer = blocking
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        call = channel.unary_stream(f"/{SERVICE}/Ticks")(b"")
        assert [next(call), next(call)] == [b"tick", b"tick"]
        call.cancel()
        assert servicer.callback_ran.wait(30)
        assert servicer.ended.wait(30), "the method kept running after the caller left"


def test_an_abort_reaches_the_caller_after_the_method_cleaned_up(
    blocking: tuple[ServerApp, Blocking],
) -> None:
    app, servicer = blocking
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(f"/{SERVICE}/Fail")(b"", timeout=30)
        assert servicer.cleaned_up.is_set()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "refused on purpose"
