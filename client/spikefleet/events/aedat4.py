"""AEDAT4 recordings (iniVation DV cameras) through the optional ``aedat`` package."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spikefleet.errors import EventFormatError
from spikefleet.events.types import as_events, check_sensor_bounds, make_events


def read_aedat4(path: str | os.PathLike[str], stream_id: int | None = None) -> np.ndarray:
    """Read the polarity events of one stream of an AEDAT4 file as ``EVENT_DTYPE``.

    Without ``stream_id`` the lowest-numbered event stream is read (as tonic does).
    """
    try:
        import aedat
    except ImportError:
        raise EventFormatError(
            "reading AEDAT4 needs the aedat package: pip install 'spikefleet[aedat]'"
        ) from None
    if not Path(path).is_file():
        raise EventFormatError(f"no AEDAT4 file at {path}")
    try:
        decoder = aedat.Decoder(str(path))
        streams = decoder.id_to_stream()
        event_streams = sorted(sid for sid, s in streams.items() if s["type"] == "events")
        if stream_id is None:
            if not event_streams:
                raise EventFormatError(f"{path}: the AEDAT4 file has no event stream")
            stream_id = event_streams[0]
        elif stream_id not in event_streams:
            raise EventFormatError(
                f"{path}: stream {stream_id} is not an event stream "
                f"(event streams: {event_streams})"
            )
        chunks = [
            packet["events"]
            for packet in decoder
            if packet["stream_id"] == stream_id and "events" in packet
        ]
    except EventFormatError:
        raise
    except Exception as exc:  # the Rust decoder raises plain exceptions on bad files
        raise EventFormatError(f"{path}: not a readable AEDAT4 file ({exc})") from None
    if not chunks:
        return make_events([], [], [], [])
    raw = np.concatenate(chunks)
    return make_events(raw["x"], raw["y"], raw["t"].astype(np.int64), raw["on"])


_MAGIC = b"#!AER-DAT4.0\r\n"
#: AEDAT4's Event struct (flatbuffers, little-endian): t int64, x int16, y int16, on bool, padding.
_AEDAT4_EVENT = np.dtype(
    {"names": ["t", "x", "y", "on"], "formats": ["<i8", "<i2", "<i2", "u1"], "itemsize": 16}
)


def write_aedat4(path: str | os.PathLike[str], events: np.ndarray, width: int, height: int) -> None:
    """Write events as an uncompressed AEDAT4 file with one event stream (id 0).

    One packet per call; this is for exporting recordings and for testing
    readers, not a replacement for iniVation's recorder.
    """
    import flatbuffers

    events = as_events(events)
    check_sensor_bounds(events, width, height)
    description = (
        '<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
        '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
        '<attr key="compression" type="string">NONE</attr>'
        '<attr key="originalOutputName" type="string">events</attr>'
        '<attr key="typeIdentifier" type="string">EVTS</attr>'
        '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
        f'<attr key="sizeX" type="int">{int(width)}</attr>'
        f'<attr key="sizeY" type="int">{int(height)}</attr>'
        '<attr key="source" type="string">spikefleet</attr>'
        "</node></node></node></dv>"
    )
    header = flatbuffers.Builder(1024)
    text = header.CreateString(description)
    header.StartObject(3)
    header.PrependInt32Slot(0, 0, 0)  # compression: None
    header.PrependInt64Slot(1, -1, 0)  # file_data_position: -1, read to the end
    header.PrependUOffsetTRelativeSlot(2, text, 0)
    header.Finish(header.EndObject(), b"IOHE")
    header_bytes = bytes(header.Output())

    records = np.zeros(len(events), dtype=_AEDAT4_EVENT)
    records["t"], records["x"], records["y"], records["on"] = (
        events["t"],
        events["x"],
        events["y"],
        events["p"],
    )
    data = records.tobytes()
    packet = flatbuffers.Builder(len(data) + 64)
    packet.StartVector(_AEDAT4_EVENT.itemsize, len(records), 8)
    packet.head -= len(data)
    packet.Bytes[packet.head : packet.head + len(data)] = data
    elements = packet.EndVector()
    packet.StartObject(1)
    packet.PrependUOffsetTRelativeSlot(0, elements, 0)
    packet.FinishSizePrefixed(packet.EndObject(), b"EVTS")
    packet_bytes = bytes(packet.Output())

    with open(path, "wb") as out:
        out.write(_MAGIC)
        out.write(len(header_bytes).to_bytes(4, "little"))
        out.write(header_bytes)
        out.write((0).to_bytes(4, "little"))  # stream id
        out.write(len(packet_bytes).to_bytes(4, "little"))
        out.write(packet_bytes)
