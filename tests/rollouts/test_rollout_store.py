"""Rollout state in the database (SQLite and PostgreSQL): every step one transaction, read
back exactly, never lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.aio import Blocking

from spikefleet.errors import RolloutNotFoundError
from spikefleet_server.rollouts.model import (
    GateResult,
    Gates,
    Rollout,
    RolloutAgent,
    RolloutSpec,
)
from spikefleet_server.rollouts.store import ConcurrentUpdateError, RolloutStore
from spikefleet_server.storage import open_database

SPEC = RolloutSpec(
    "cd" * 32,
    selector={"site": "lab"},
    canary_percent=10,
    waves=(50.0, 100.0),
    bake_s=30,
    gates=Gates(max_error_rate=0.01, min_agreement=0.98, min_shadow_frames=10),
)


def rollout() -> Rollout:
    return Rollout(
        rollout_id="r1",
        spec=SPEC,
        state="running",
        phase=0,
        phases=3,
        stage="shadow",
        stage_started_unix_ms=1000,
        created_unix_ms=1000,
        updated_unix_ms=1000,
        canary=True,
        agents=[RolloutAgent("a1", 0, "ef" * 32), RolloutAgent("a2", 1, "")],
    )


def test_a_rollout_survives_closing_and_reopening_the_database(database_target: str | Path) -> None:
    db = open_database(database_target)
    store = Blocking(RolloutStore(db))
    created = store.create(rollout(), ["created"])
    created.stage = "install"
    created.agents[0].status = "installing"
    created.gates = [GateResult("agreement", True, 0.99, 0.98, "99/100")]
    store.save(created, ["canary shadow passed"], [created.agents[0]])
    db.close()

    reopened = open_database(database_target)
    again = Blocking(RolloutStore(reopened)).get("r1")
    reopened.close()
    assert again.spec == SPEC
    assert (again.stage, again.version, again.canary) == ("install", 1, True)
    assert [(a.agent_id, a.status) for a in again.agents] == [
        ("a1", "installing"),
        ("a2", "pending"),
    ]
    assert again.gates == [GateResult("agreement", True, 0.99, 0.98, "99/100")]
    assert [e.message for e in again.events] == ["created", "canary shadow passed"]


def test_a_stale_copy_cannot_overwrite_a_newer_step(database_target: str | Path) -> None:
    store = Blocking(RolloutStore(open_database(database_target)))
    first = store.create(rollout(), [])
    stale = store.get("r1")
    first.state = "paused"
    store.save(first, ["paused"])
    stale.state = "rolling-back"
    with pytest.raises(ConcurrentUpdateError):
        store.save(stale, ["rolling back"])
    assert store.get("r1").state == "paused"
    assert [e.message for e in store.get("r1").events] == ["paused"]


def test_listing_and_unknown_ids(database_target: str | Path) -> None:
    store = Blocking(RolloutStore(open_database(database_target)))
    done = rollout()
    done.rollout_id, done.state = "r0", "succeeded"
    store.create(done, [])
    store.create(rollout(), [])
    assert [r.rollout_id for r in store.list_rollouts()] == ["r0", "r1"]
    assert [r.rollout_id for r in store.list_rollouts(active_only=True)] == ["r1"]
    with pytest.raises(RolloutNotFoundError, match="no rollout 'nope'"):
        store.get("nope")
