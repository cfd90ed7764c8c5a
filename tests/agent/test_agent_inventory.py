"""Inventory: USB boards and cameras via pyusb (a fake libusb backend), PCIe via sysfs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import usb.backend

from spikefleet_agent.device.inventory import DeviceInfo, scan, scan_pci, scan_usb


class FakeUsbBackend(usb.backend.IBackend):
    """What libusb would enumerate: pyusb builds its Device objects from these."""

    def __init__(self, devices: list[tuple[int, int, int, int, tuple[int, ...]]]) -> None:
        self._devices = devices

    def enumerate_devices(self) -> Any:
        return iter(range(len(self._devices)))

    def get_device_descriptor(self, dev: int) -> Any:
        vendor, product, bus, address, ports = self._devices[dev]
        return SimpleNamespace(
            bLength=18,
            bDescriptorType=1,
            bcdUSB=0x0200,
            bDeviceClass=0,
            bDeviceSubClass=0,
            bDeviceProtocol=0,
            bMaxPacketSize0=64,
            idVendor=vendor,
            idProduct=product,
            bcdDevice=0x0100,
            iManufacturer=0,
            iProduct=0,
            iSerialNumber=0,
            bNumConfigurations=1,
            address=address,
            bus=bus,
            port_number=ports[-1] if ports else None,
            port_numbers=ports,
            speed=3,
        )


def pci_device(root: Path, address: str, vendor: str, device: str) -> None:
    entry = root / address
    entry.mkdir(parents=True)
    (entry / "vendor").write_text(vendor + "\n")
    (entry / "device").write_text(device + "\n")
    (entry / "class").write_text("0x120000\n")


def test_usb_devices_are_matched_against_the_vendor_product_table() -> None:
    backend = FakeUsbBackend(
        [
            (0x1D6B, 0x0002, 1, 1, ()),  # a root hub: not ours
            (0x152A, 0x8419, 1, 4, (2,)),  # DVXplorer
            (0x1E7C, 0xBCA1, 2, 7, (1, 3)),  # a BrainChip board, any product
            (0x152A, 0x9999, 1, 9, (4,)),  # iniVation, but not a known camera
        ]
    )
    assert scan_usb(backend) == [
        DeviceInfo("event-camera", "usb", 0x152A, 0x8419, "iniVation DVXplorer", "usb:1-2"),
        DeviceInfo("akida-usb", "usb", 0x1E7C, 0xBCA1, "BrainChip Akida board", "usb:2-1.3"),
    ]


def test_pcie_cards_are_found_by_brainchip_vendor_id(tmp_path: Path) -> None:
    pci_device(tmp_path, "0000:00:1f.0", "0x8086", "0xa304")
    pci_device(tmp_path, "0000:01:00.0", "0x1e7c", "0xbca1")
    (tmp_path / "0000:02:00.0").mkdir()  # unreadable entry: skipped
    assert scan_pci(tmp_path) == [
        DeviceInfo("akida-pcie", "pci", 0x1E7C, 0xBCA1, "BrainChip Akida PCIe", "0000:01:00.0")
    ]


def test_missing_sysfs_means_no_pcie_devices(tmp_path: Path) -> None:
    assert scan_pci(tmp_path / "absent") == []


def test_scan_lists_pcie_then_usb(tmp_path: Path) -> None:
    pci_device(tmp_path, "0000:01:00.0", "0x1e7c", "0xbca1")
    found = scan(FakeUsbBackend([(0x04B4, 0x00F4, 3, 2, (1,))]), tmp_path)
    assert [d.kind for d in found] == ["akida-pcie", "event-camera"]
