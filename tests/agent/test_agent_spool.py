"""The telemetry spool: ordered, durable, bounded, acked away."""

from __future__ import annotations

from pathlib import Path

from spikefleet.v1 import fleet_pb2
from spikefleet_agent.telemetry.spool import Spool


def batch(frames: int) -> fleet_pb2.TelemetryBatch:
    return fleet_pb2.TelemetryBatch(frames=frames, program_sha256="ab" * 32)


def test_batches_get_increasing_seqs_and_come_back_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "t.sqlite")
    seqs = [spool.append(batch(n)) for n in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [b.frames for b in spool.pending(after_seq=2)] == [2, 3, 4]
    assert [b.seq for b in spool.pending(after_seq=0, limit=2)] == [1, 2]


def test_ack_removes_what_the_server_stored(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "t.sqlite")
    for n in range(4):
        spool.append(batch(n))
    spool.ack(3)
    assert [b.seq for b in spool.pending(0)] == [4]
    assert spool.depth() == 1


def test_seq_survives_a_restart_even_when_everything_was_acked(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "t.sqlite")
    spool.append(batch(1))
    spool.append(batch(2))
    spool.ack(2)
    spool.close()
    reopened = Spool(tmp_path / "t.sqlite")
    assert reopened.append(batch(3)) == 3
    assert [b.frames for b in reopened.pending(0)] == [3]


def test_over_the_bound_the_oldest_batches_are_dropped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "t.sqlite", max_batches=3)
    for n in range(5):
        spool.append(batch(n))
    assert [b.seq for b in spool.pending(0)] == [3, 4, 5]
    assert spool.dropped() == 2


def test_a_wiped_spool_continues_after_what_the_server_already_has(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "t.sqlite")  # fresh state dir, agent id reused
    spool.append(batch(7))
    spool.append(batch(8))
    spool.rebase(server_seq=100)
    assert [(b.seq, b.frames) for b in spool.pending(100)] == [(101, 7), (102, 8)]
    assert spool.append(batch(9)) == 103


def test_rebase_leaves_a_spool_that_is_ahead_of_the_server_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "t.sqlite")
    for n in range(3):
        spool.append(batch(n))
    spool.rebase(server_seq=1)
    assert [b.seq for b in spool.pending(0)] == [1, 2, 3]


def test_a_server_seq_at_the_top_of_the_range_leaves_the_spool_working(tmp_path: Path) -> None:
    """Only a forged batch gets near 2**63: the spool can't follow it, says so, and
    keeps its own numbering instead of failing every session."""
    spool = Spool(tmp_path / "t.sqlite")
    spool.append(batch(1))
    spool.append(batch(2))
    assert spool.rebase(2**63 - 1) is False
    assert [b.seq for b in spool.pending(0)] == [1, 2]
    assert spool.append(batch(3)) == 3
    assert spool.pending(2**64 - 1) == []  # whatever a server sends back is clamped
    spool.ack(2**64 - 1)
    assert spool.depth() == 0


def test_rebase_renumbers_after_a_server_seq_it_never_issued(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "t.sqlite")
    spool.append(batch(1))
    assert spool.rebase(1000) is True
    assert [b.seq for b in spool.pending(0)] == [1001]
    assert spool.append(batch(2)) == 1002
