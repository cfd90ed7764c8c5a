"""A fleet server for rollout tests: the Fleet and Rollouts services on one loopback port.

Used in-process by the fixtures and as ``python fleet_server.py DB PORT PROGRAMS_DIR``
for the tests that kill the server with -9 (it prints ``READY <port>`` when serving).
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from spikefleet.client.rollouts import RolloutsClient
from spikefleet.errors import RolloutSpecError
from spikefleet.v1 import fleet_pb2_grpc
from spikefleet_server.db import Database
from spikefleet_server.fleet import FleetService, FleetStore
from spikefleet_server.rollouts import RolloutController, build
from spikefleet_server.rollouts.service import add_to_server


@dataclass
class FleetServer:
    db: Path
    programs: dict[str, bytes] = field(default_factory=dict)
    port: int = 0
    tick_s: float = 0.05
    controller: RolloutController | None = None
    fleet: FleetService | None = None
    _server: grpc.Server | None = None
    _db: Database | None = None

    def resolve(self, ref: str) -> str:
        if ref not in self.programs:
            raise RolloutSpecError(f"no program {ref!r} in the registry")
        return ref

    def start(self) -> FleetServer:
        self._db = Database(self.db)
        self.fleet = FleetService(
            FleetStore(self._db), self.programs.__getitem__, heartbeat_interval_ms=200
        )
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=256))
        fleet_pb2_grpc.add_FleetServicer_to_server(self.fleet, server)
        self.controller = build(
            self.fleet, self._db, resolve_program=self.resolve, tick_s=self.tick_s
        )
        add_to_server(self.controller, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        self.controller.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        if self.fleet is not None:
            self.fleet.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> RolloutsClient:
        return RolloutsClient(grpc.insecure_channel(self.address))


def main(argv: list[str]) -> int:
    db, port, programs_dir = Path(argv[0]), int(argv[1]), Path(argv[2])
    programs = {p.name: p.read_bytes() for p in programs_dir.iterdir()}
    server = FleetServer(db, programs, port=port).start()
    print(f"READY {server.port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
