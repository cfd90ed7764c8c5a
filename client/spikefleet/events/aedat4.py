"""AEDAT4 recordings (iniVation DV cameras) through the optional ``aedat`` package."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spikefleet.errors import EventFormatError
from spikefleet.events.types import make_events


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
