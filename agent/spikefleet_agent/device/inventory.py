"""What this host has: Akida boards (USB, PCIe) and event cameras.

USB devices come from pyusb and a vendor/product table; PCIe cards from sysfs
(BrainChip's PCI vendor id is 0x1e7c). The inventory is reported at register
time and in telemetry so the fleet can target hosts by hardware.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

BRAINCHIP_PCI_VENDOR = 0x1E7C
SYSFS_PCI_DEVICES = Path("/sys/bus/pci/devices")


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "akida-usb", "akida-pcie", "event-camera"
    bus: str  # "usb", "pci"
    vendor_id: int
    product_id: int
    description: str
    address: str


@dataclass(frozen=True)
class UsbModel:
    kind: str
    description: str


#: (vendor, product) -> model; product None matches any product of that vendor.
USB_TABLE: dict[tuple[int, int | None], UsbModel] = {
    (0x1E7C, None): UsbModel("akida-usb", "BrainChip Akida board"),
    (0x152A, 0x8400): UsbModel("event-camera", "iniVation DVS128"),
    (0x152A, 0x841B): UsbModel("event-camera", "iniVation DAVIS (FX2)"),
    (0x152A, 0x841A): UsbModel("event-camera", "iniVation DAVIS (FX3)"),
    (0x152A, 0x8419): UsbModel("event-camera", "iniVation DVXplorer"),
    (0x04B4, 0x00F4): UsbModel("event-camera", "Prophesee EVK (Cypress FX3)"),
    (0x04B4, 0x00F5): UsbModel("event-camera", "Prophesee EVK (Cypress FX3)"),
}


def _lookup(
    table: Mapping[tuple[int, int | None], UsbModel], vendor: int, product: int
) -> UsbModel | None:
    return table.get((vendor, product)) or table.get((vendor, None))


def scan_usb(
    backend: Any = None, table: Mapping[tuple[int, int | None], UsbModel] = USB_TABLE
) -> list[DeviceInfo]:
    """Known USB devices; an empty list when no libusb is available."""
    import usb.core

    try:
        devices: Iterable[Any] = usb.core.find(find_all=True, backend=backend) or []
        found = []
        for dev in devices:
            model = _lookup(table, int(dev.idVendor), int(dev.idProduct))
            if model is None:
                continue
            ports = ".".join(str(p) for p in (getattr(dev, "port_numbers", None) or ()))
            where = f"usb:{dev.bus}-{ports}" if ports else f"usb:{dev.bus}:{dev.address}"
            found.append(
                DeviceInfo(
                    model.kind,
                    "usb",
                    int(dev.idVendor),
                    int(dev.idProduct),
                    model.description,
                    where,
                )
            )
    except usb.core.NoBackendError:
        log.info("inventory.usb_unavailable", reason="no libusb backend")
        return []
    return found


def scan_pci(root: Path = SYSFS_PCI_DEVICES) -> list[DeviceInfo]:
    """BrainChip PCIe cards listed under a sysfs ``bus/pci/devices`` directory."""
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        try:
            vendor = int((entry / "vendor").read_text().strip(), 16)
            product = int((entry / "device").read_text().strip(), 16)
        except (OSError, ValueError):
            continue
        if vendor == BRAINCHIP_PCI_VENDOR:
            found.append(
                DeviceInfo("akida-pcie", "pci", vendor, product, "BrainChip Akida PCIe", entry.name)
            )
    return found


def scan(usb_backend: Any = None, pci_root: Path = SYSFS_PCI_DEVICES) -> list[DeviceInfo]:
    return scan_pci(pci_root) + scan_usb(usb_backend)
