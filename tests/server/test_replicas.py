"""Replicas' building blocks on a real PostgreSQL: notifications reach a listener,
exactly one holder of a lease at a time, taken over when the holder's connection dies,
and the agents of a replica whose liveness lock is gone recorded disconnected."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import psycopg
from support.backends import postgres_database
from support.postgres import PostgresCluster

from spikefleet.v1 import fleet_pb2
from spikefleet_server.fleet import FleetStore
from spikefleet_server.replicas import (
    FLEET,
    Lease,
    Listener,
    Liveness,
    fleet_news,
    fleet_payloads,
    libpq_url,
)
from spikefleet_server.storage import Database


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


def test_a_group_of_agents_is_named_in_as_few_notifications_as_fit(postgres_url: str) -> None:
    """A group of Registers is one NOTIFY naming its agents (ids may hold spaces, never a
    newline), split only where PostgreSQL's 8,000-byte payload limit says so."""
    ids = [f"edge {i:04d} " + "é" * 60 for i in range(200)]  # 130 bytes each
    payloads = fleet_payloads("connected", ids)
    assert len(payloads) == 4
    heard: queue.Queue[tuple[str, str]] = queue.Queue()
    listener = Listener(postgres_url, [FLEET], lambda c, p: heard.put((c, p))).start()
    try:
        assert listener.listening.wait(30)
        with psycopg.connect(libpq_url(postgres_url)) as conn:
            for payload in payloads:
                conn.execute("SELECT pg_notify(%s, %s)", (FLEET, payload))
            conn.commit()
        news = [fleet_news(heard.get(timeout=30)[1]) for _ in payloads]
    finally:
        listener.stop()
    assert {kind for kind, _ in news} == {"connected"}
    assert [agent_id for _, group in news for agent_id in group] == ids
    assert fleet_news("disconnected ") == ("disconnected", [""])  # any agent


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


def test_a_replica_without_its_liveness_lock_has_its_agents_recorded_disconnected(
    postgres_cluster: PostgresCluster,
) -> None:
    url = postgres_database(postgres_cluster)
    db = Database(url)
    ids = {"a": 0, "b": 0}
    store_a = FleetStore(db, replica_id=lambda: ids["a"])
    store_b = FleetStore(db, replica_id=lambda: ids["b"])
    first, second = Liveness(url, store_a), Liveness(url, store_b)
    try:
        ids["a"], ids["b"] = first.acquire(), second.acquire()
        assert ids["a"] != ids["b"]
        store_a._register(fleet_pb2.Register(agent_id="edge-1"))
        store_b._register(fleet_pb2.Register(agent_id="edge-2"))

        def connected() -> set[str]:
            return {a.agent_id for a in store_b._agents() if a.connected}

        assert second.sweep() == 0  # the first is alive: its agents stay
        assert connected() == {"edge-1", "edge-2"}
        first.stop()  # its connection, and with it its lock, is gone: as if SIGKILLed
        assert second.sweep() == 1
        assert connected() == {"edge-2"}

        # edge-2 moves to a replica started since; the second's late "disconnected"
        # write for it changes nothing, the new owner's does
        first = Liveness(url, store_a)
        ids["a"] = first.acquire()
        store_a._register(fleet_pb2.Register(agent_id="edge-2"))
        assert not store_b._disconnected("edge-2")
        assert connected() == {"edge-2"}
        assert store_a._disconnected("edge-2")
        assert connected() == set()
    finally:
        first.stop()
        second.stop()
        db.close()
