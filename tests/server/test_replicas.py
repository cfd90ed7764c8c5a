"""Replicas' building blocks on a real PostgreSQL: notifications reach a listener, and
exactly one holder of a lease at a time, taken over when the holder's connection dies."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import psycopg

from spikefleet_server.replicas import Lease, Listener, libpq_url


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_a_notification_committed_elsewhere_reaches_the_listener(postgres_url: str) -> None:
    heard: queue.Queue[tuple[str, str]] = queue.Queue()
    listener = Listener(postgres_url, ["assignments"], lambda c, p: heard.put((c, p))).start()
    try:
        assert listener.listening.wait(30)
        with psycopg.connect(libpq_url(postgres_url)) as conn:
            conn.execute("SELECT pg_notify('assignments', 'edge-7')")
            conn.rollback()  # not committed: never delivered
            conn.execute("SELECT pg_notify('assignments', 'edge-8')")
            conn.commit()
        assert heard.get(timeout=30) == ("assignments", "edge-8")
        assert heard.empty()
    finally:
        listener.stop()


def test_one_replica_holds_the_lease_and_another_takes_over_when_it_dies(
    postgres_url: str,
) -> None:
    first = Lease(postgres_url, "rollouts", retry_s=0.1).start()
    assert first.wait_held(30)
    second = Lease(postgres_url, "rollouts", retry_s=0.1).start()
    try:
        time.sleep(0.5)  # several of the second's tries
        assert not second.is_held
        # What a SIGKILLed replica leaves: its connection gone, so is its lock.
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND objid = %s AND granted",
                (first.key,),
            )
        wait_until(lambda: second.is_held, "the second replica to take the lease")
        wait_until(lambda: not first.is_held, "the first to notice it lost the lease")
        assert not first.wait_held(0.5)  # it retries, but the second holds it now
    finally:
        first.stop()
        second.stop()
