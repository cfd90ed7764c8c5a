"""The agent process: wires device, slots, runtime, inference API, telemetry and control.

Start order matters: the device and state directory are locked first (two
agents never share them), the last good program is loaded from its slot
before the inference API opens, and the control channel comes last, so the
agent serves even when the server is unreachable.
"""

from __future__ import annotations

import gc
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import start_http_server

from spikefleet.errors import SpikefleetError
from spikefleet.program.signing import TrustedKeys
from spikefleet.v1 import fleet_pb2, inference_pb2
from spikefleet_agent import __version__
from spikefleet_agent.config import AgentConfig, read_token
from spikefleet_agent.control.channel import ControlChannel
from spikefleet_agent.control.installer import Installer
from spikefleet_agent.device import inventory as inventory_mod
from spikefleet_agent.device.base import Backend
from spikefleet_agent.device.factory import open_backend
from spikefleet_agent.device.lock import DeviceLock
from spikefleet_agent.inference.server import InferenceServer, serve
from spikefleet_agent.inference.service import EventLimits, InferenceService
from spikefleet_agent.programs.keyring import KeyChanges, KeyRing
from spikefleet_agent.programs.slots import SlotStore
from spikefleet_agent.runtime import Runtime
from spikefleet_agent.telemetry.collector import Collector
from spikefleet_agent.telemetry.spool import Spool

log = structlog.get_logger(__name__)

HELD_BATCHES = 1024  # telemetry periods kept in memory while the spool cannot be written


def _device_pb(info: inventory_mod.DeviceInfo) -> fleet_pb2.Device:
    return fleet_pb2.Device(
        kind=info.kind,
        bus=info.bus,
        vendor_id=info.vendor_id,
        product_id=info.product_id,
        description=info.description,
        address=info.address,
    )


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        hardware_device: Any = None,
        usb_backend: Any = None,
        pci_root: Path = inventory_mod.SYSFS_PCI_DEVICES,
    ) -> None:
        self.config = config
        self._hardware_device = hardware_device
        self._usb_backend = usb_backend
        self._pci_root = pci_root
        self._locks: list[DeviceLock] = []
        self._stopped = threading.Event()
        self._keys_lock = threading.Lock()
        self.collector = Collector()
        self.backend: Backend | None = None
        self.runtime: Runtime | None = None
        self.control: ControlChannel | None = None
        self.installer: Installer | None = None
        self.inference_port = 0
        self.metrics_port = 0
        self._server: InferenceServer | None = None
        self._threads: list[threading.Thread] = []
        self.inventory: list[fleet_pb2.Device] = []
        self._held: deque[fleet_pb2.TelemetryBatch] = deque()  # closed, not yet spooled
        self._lost = 0  # held batches given up, not yet counted in the spool

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Agent:
        """Bring everything up; on any failure release what was taken and re-raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Agent:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self._locks.append(DeviceLock(cfg.state_dir / "agent.lock").acquire())
        # every backend owns its device: a second agent on the same one fails here,
        # the simulator's too (it stands in for a chip in tests and demos)
        kind = "akida" if cfg.backend == "akida-hw" else cfg.backend
        lock_name = f"{kind}-{cfg.device_index}.lock"
        self._locks.append(DeviceLock(cfg.lock_dir / lock_name).acquire())
        self.inventory = [
            _device_pb(d) for d in inventory_mod.scan(self._usb_backend, self._pci_root)
        ]
        self.backend = open_backend(
            cfg.backend,
            device=self._hardware_device,
            device_index=cfg.device_index,
            max_engine_bytes=cfg.max_engine_bytes,
        )
        self.keyring = KeyRing(TrustedKeys.load(*cfg.trusted_keys), cfg.state_dir / "keys")
        self.slots = SlotStore(
            cfg.state_dir / "programs", self.keyring.trusted, max_engine_bytes=cfg.max_engine_bytes
        )
        self.spool = Spool(cfg.state_dir / "telemetry.sqlite", cfg.telemetry.spool_max_batches)
        self.runtime = Runtime(self.backend, self.collector)
        self._boot_program()

        service = InferenceService(
            self.runtime,
            self.collector,
            status=self.status,
            max_open_samples=cfg.inference.max_open_samples,
            event_window_us=cfg.inference.event_window_us,
            event_limits=EventLimits(
                max_frames_per_packet=cfg.inference.max_frames_per_packet,
                max_sensor_pixels=cfg.inference.max_sensor_pixels,
                max_stream_bytes=cfg.inference.max_stream_bytes,
            ),
            workers=cfg.inference.max_workers,
        )
        self._server = serve(
            service,
            cfg.inference.address,
            token=read_token(cfg.inference.token_file),
            max_streams=cfg.inference.max_streams,
            max_message_bytes=cfg.inference.max_message_bytes,
            tls_cert=cfg.inference.tls_cert,
            tls_key=cfg.inference.tls_key,
            tls_client_ca=cfg.inference.tls_client_ca,
        )
        self.inference_port = self._server.port
        if cfg.telemetry.metrics_port > 0:
            server, _ = start_http_server(
                cfg.telemetry.metrics_port,
                addr=cfg.telemetry.metrics_address,
                registry=self.collector.metrics.registry,
            )
            self.metrics_port = server.server_port
            self._metrics_server = server

        if cfg.server.addresses:
            self.control = ControlChannel(
                cfg.server.addresses,
                register=self._register_message,
                heartbeat=self._heartbeat_message,
                on_assignment=self._on_assignment,
                spool=self.spool,
                token=read_token(cfg.server.token_file),
                tls=cfg.server.tls(),
                heartbeat_interval_s=cfg.server.heartbeat_interval_s,
                reconnect_min_s=cfg.server.reconnect_min_s,
                reconnect_max_s=cfg.server.reconnect_max_s,
                on_connected=self._on_connected,
            )
            self.installer = Installer(
                self.slots,
                self.runtime,
                fetch=self.control.fetch,
                report=self._report_install,
                learn_keys=self.follow_keys,
            )
            self.installer.start()
            for report in self._boot_reports:  # sent once the stream is up
                self._report_install(report)
            self.control.start()
        telemetry = threading.Thread(target=self._telemetry_loop, name="telemetry", daemon=True)
        telemetry.start()
        self._threads.append(telemetry)
        # What exists now lives as long as the agent: keep it out of the collector's full
        # passes, which otherwise stall the per-frame path for milliseconds at a time.
        gc.freeze()
        log.info(
            "agent.started",
            agent_id=cfg.agent_id,
            backend=cfg.backend,
            inference=cfg.inference.address,
            server=", ".join(cfg.server.addresses) or "(standalone)",
        )
        return self

    def _boot_program(self) -> None:
        """Serve the active slot's program, or the other slot's when the active one fails
        to verify or to load (any error, MemoryError included): a program that verifies
        but cannot run must not keep the agent down. Failures are reported to the server."""
        assert self.runtime is not None
        self._boot_reports: list[fleet_pb2.InstallReport] = []
        unusable: set[str] = set()
        while (boot := self.slots.load_active(exclude=unusable)) is not None:
            try:
                loaded = self.runtime.load(boot.sha256, boot.program)
            except Exception as exc:
                unusable.add(boot.slot)
                log.error(
                    "agent.program_unloadable",
                    sha256=boot.sha256,
                    slot=boot.slot,
                    error=f"{type(exc).__name__}: {exc}",
                )
                self._boot_reports.append(
                    fleet_pb2.InstallReport(
                        sha256=boot.sha256,
                        status=fleet_pb2.InstallReport.FAILED,
                        reason="load",
                        detail=f"at boot, slot {boot.slot}: {type(exc).__name__}: {exc}"[:4000],
                    )
                )
                continue
            self.runtime.swap(loaded)
            state = self.slots.state()
            self.runtime.previous_sha256 = state.previous_sha256 if state else ""
            log.info("agent.program_loaded", sha256=boot.sha256, slot=boot.slot)
            return
        log.warning("agent.no_program", hint="waiting for an assignment from the server")

    def stop(self) -> None:
        self._stopped.set()
        if self.control is not None:
            self.control.stop()
        if self.installer is not None:
            self.installer.stop()
        if self._server is not None:
            self._server.stop(grace=1.0)
        for thread in self._threads:
            thread.join(timeout=5)
        if getattr(self, "_metrics_server", None) is not None:
            self._metrics_server.shutdown()
        if self.backend is not None:
            self.backend.close()
        if hasattr(self, "spool"):
            self.spool.close()
        for lock in reversed(self._locks):
            lock.release()
        self._locks.clear()

    def wait(self) -> None:
        self._stopped.wait()

    # -- what the agent tells others --------------------------------------------

    def _program_sha(self) -> str:
        active = self.runtime.active if self.runtime else None
        return active.sha256 if active else ""

    def _register_message(self) -> fleet_pb2.Register:
        return fleet_pb2.Register(
            agent_id=self.config.agent_id,
            labels=self.config.labels,
            inventory=self.inventory,
            backend=self.config.backend,
            program_sha256=self._program_sha(),
            previous_sha256=self.runtime.previous_sha256 if self.runtime else "",
            version=__version__,
        )

    def _heartbeat_message(self) -> fleet_pb2.Heartbeat:
        shadow = self.runtime.shadow if self.runtime else None
        sha = self._program_sha()
        return fleet_pb2.Heartbeat(
            unix_ms=int(time.time() * 1000),
            program_sha256=sha,
            health="ok" if sha else "no-program",
            shadow_sha256=shadow.sha256 if shadow else "",
        )

    def _on_assignment(self, assignment: fleet_pb2.Assignment) -> None:
        if self.installer is not None:
            self.installer.submit(assignment)

    def _report_install(self, report: fleet_pb2.InstallReport) -> None:
        name = fleet_pb2.InstallReport.Status.Name(report.status)
        self.collector.metrics.installs.labels(status=name).inc()
        if report.status != fleet_pb2.InstallReport.INSTALLED:
            self.collector.error(f"install-{report.reason or name.lower()}")
        if self.control is not None:
            self.control.send(fleet_pb2.AgentMessage(install=report))

    def _on_connected(self, up: bool) -> None:
        self.collector.metrics.connected.set(int(up))
        if up:  # keys may have rotated while away: follow them, off the stream's thread
            threading.Thread(target=self._follow_keys_quietly, name="keys", daemon=True).start()

    def follow_keys(self) -> KeyChanges:
        """Learn the endorsed keys the server announces, retire those it dropped."""
        assert self.control is not None
        with self._keys_lock:
            return self.keyring.follow(self.control.trusted_keys())

    def _follow_keys_quietly(self) -> None:
        try:
            self.follow_keys()
        except SpikefleetError as exc:
            log.warning("keys.follow_failed", error=str(exc))
        except Exception:
            log.exception("keys.follow_crashed")

    def flush_telemetry(self) -> int:
        """Close the current telemetry period into the spool now; return its seq (0 when
        the spool could not be written: the batch is held in memory and appended, in
        order, at the next flush; beyond HELD_BATCHES the oldest are counted as dropped)."""
        assert self.backend is not None
        batch = self.collector.snapshot(
            program_sha256=self._program_sha(),
            backend=self.config.backend,
            inventory=self.inventory,
            power=self.backend.power_samples(),
        )
        self._held.append(batch)
        seq = 0
        try:
            while self._held:
                seq = self.spool.append(self._held[0], lost=self._lost)
                self._held.popleft()
                self._lost = 0
        except (sqlite3.Error, OSError) as exc:
            seq = 0
            while len(self._held) > HELD_BATCHES:
                self._held.popleft()
                self._lost += 1
            log.warning(
                "telemetry.spool_unwritable",
                error=str(exc),
                held=len(self._held),
                lost=self._lost,
                hint="free space in the agent's state_dir; held batches are written when it can",
            )
        self.collector.metrics.spooled.set(self.spool.depth() + len(self._held))
        if self.control is not None:
            self.control.wake()
        return seq

    def _telemetry_loop(self) -> None:
        while not self._stopped.wait(self.config.telemetry.interval_s):
            try:
                self.flush_telemetry()
            except Exception:
                log.exception("telemetry.flush_failed")

    def status(self) -> inference_pb2.AgentStatus:
        active = self.runtime.active if self.runtime else None
        shadow = self.runtime.shadow if self.runtime else None
        reply = inference_pb2.AgentStatus(
            agent_id=self.config.agent_id,
            backend=self.config.backend,
            program_sha256=active.sha256 if active else "",
            previous_sha256=self.runtime.previous_sha256 if self.runtime else "",
            connected=bool(self.control and self.control.connected.is_set()),
            frames=self.collector.total_frames,
            spooled_batches=self.spool.depth() if hasattr(self, "spool") else 0,
            shadow_sha256=shadow.sha256 if shadow else "",
            version=__version__,
        )
        if active is not None:
            program = active.program
            reply.program_name = program.name
            reply.input_shape.extend(program.input.shape)
            reply.input_bits = program.input.bits
            reply.labels.extend(program.labels)
        return reply
