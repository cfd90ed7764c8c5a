"""The rollout state machine.

Each call to :meth:`RolloutController.step` looks at one rollout and at what
the fleet reports, issues the assignments that follow (idempotent: they set
the agents' desired state), and commits the new rollout state in one
transaction. Nothing lives only in memory, so a server restarted at any point
reconciles desired against reported state and carries on.

:meth:`RolloutController.run` is an asyncio task on the server's loop. It steps
the active rollouts when something they wait for may have happened: a fleet
event about one of their agents (connected, disconnected, install report,
telemetry; see :meth:`wake`), or the next deadline one of them has (a bake or
shadow period ending, an install timing out). Between those it sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

import structlog

from spikefleet.errors import RolloutStateError
from spikefleet_server.rollouts import gates as gate_rules
from spikefleet_server.rollouts.model import (
    ABORTED,
    ACTIVE_STATES,
    AGENT_ROLLED_BACK,
    AGENT_ROLLING_BACK,
    BAKE,
    FAILED,
    FINAL_STATES,
    INSTALL,
    INSTALLED,
    INSTALLING,
    OFFLINE,
    PAUSED,
    PENDING,
    ROLLED_BACK,
    ROLLING_BACK,
    RUNNING,
    SHADOW,
    SHADOWING,
    SUCCEEDED,
    AgentStatus,
    AgentView,
    GateResult,
    Rollout,
    RolloutAgent,
    RolloutSpec,
    Stage,
)
from spikefleet_server.rollouts.plan import plan_phases
from spikefleet_server.rollouts.ports import Assigner, Assignment, FleetView
from spikefleet_server.storage.areas import RolloutStorage

log = structlog.get_logger(__name__)

FAILED_INSTALL_STATUSES = frozenset({"FAILED", "REFUSED"})
TOUCHED = frozenset({SHADOWING, INSTALLING, INSTALLED, FAILED, OFFLINE, AGENT_ROLLING_BACK})
COALESCE_S = 0.02  # fleet events within this long of each other wake the controller once
MAX_SLEEP_S = 30.0  # a safety net: never sleep longer than this with rollouts active
JUST_DUE_MS = 500  # a deadline this recent may have passed after the step looked


class RolloutController:
    def __init__(
        self,
        store: RolloutStorage,
        fleet: FleetView,
        assigner: Assigner,
        *,
        resolve_program: Callable[[str], Awaitable[str]] | None = None,
        clock: Callable[[], float] = time.time,
        leader: Callable[[], bool] = lambda: True,
        announce: Callable[[str, int], Awaitable[None]] | None = None,
        max_sleep_s: float = MAX_SLEEP_S,
    ) -> None:
        """Replicas: only while ``leader()`` (this replica holds the rollout lease) does
        it step rollouts; elsewhere requests are stored and the leader acts on them.
        ``announce(rollout_id, version)`` tells the other replicas of a new rollout or a
        commit (the leader steps, watchers wake). The caller wakes it (:meth:`wake`) for fleet
        events on any replica and when the lease is won; ``max_sleep_s`` is only a
        safety net."""
        self._leader = leader
        self._announce = announce
        self._announced: dict[str, int] = {}  # the version of each rollout we last announced
        self._max_sleep_s = max_sleep_s
        self.store = store
        self.fleet = fleet
        self.assigner = assigner
        self._resolve_program = resolve_program
        self._clock = clock
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()  # set (and replaced) at every commit
        self._wake = asyncio.Event()
        self._watched: set[str] = set()  # agents of active rollouts: their events wake us
        self._wants_telemetry = False  # a canary is past its bake, waiting for shadow frames
        self._task: asyncio.Task[None] | None = None
        self.stopping = False  # set by stop(): watchers end their streams
        self._pending: list[Assignment] = []  # made by the step under way, stored at its commit

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Reconcile every active rollout, then step them in a task (on the running loop)."""
        self.stopping = False
        await self.reconcile()
        self._task = asyncio.create_task(self.run(), name="rollouts")

    async def stop(self) -> None:
        """Stop stepping (the server is draining); a later :meth:`start` resumes."""
        self.stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._notify()  # watchers re-read and see the server going

    def wake(self, agent_id: str = "", kind: str = "") -> None:
        """Fleet event ``kind`` happened to ``agent_id`` (any agent if ""): step the
        rollouts it is in. Telemetry only matters to a canary waiting for shadow frames
        (gates read stored telemetry when a bake ends). Call on the loop (the fleet's
        subscribers are)."""
        if kind == "telemetry" and not self._wants_telemetry:
            return
        if not agent_id or agent_id in self._watched:
            self._wake.set()

    async def run(self) -> None:
        """Step the active rollouts whenever woken or at their next deadline, until cancelled."""
        led = self._leader()
        while True:
            try:
                leading = self._leader()
                if leading and not led:  # won the lease: carry on from the stored steps
                    log.info("rollouts.leading")
                    await self.reconcile()
                led = leading
                if leading:
                    wait_s = min(await self.step_all(), self._max_sleep_s)
                else:  # another replica steps them; woken when the lease is won
                    self._watched, self._wants_telemetry = set(), False
                    wait_s = self._max_sleep_s
            except Exception:
                log.exception("rollouts.step_failed")
                wait_s = min(MAX_SLEEP_S, self._max_sleep_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)
            self._wake.clear()
            await asyncio.sleep(COALESCE_S)  # a burst of fleet events is one step

    async def reconcile(self) -> None:
        """Bring every active rollout up to date with what the agents report (after a restart).

        Nothing is re-sent: the fleet stores each assignment before the step that made
        it commits, so after a crash either the agent is still pending in the rollout
        (and the step assigns it again) or its desired state is already stored and is
        delivered when it reconnects. Re-sending a rollback would roll back twice.
        """
        for rollout in await self.store.list_rollouts(active_only=True):
            log.info(
                "rollouts.resumed",
                rollout=rollout.rollout_id,
                state=rollout.state,
                phase=rollout.phase,
                stage=rollout.stage,
            )
            if rollout.state != PAUSED:
                await self.step(rollout.rollout_id)

    # -- requests --------------------------------------------------------------------------

    async def create(self, spec: RolloutSpec) -> Rollout:
        if self._resolve_program is not None:
            spec = replace(spec, program_sha256=await self._resolve_program(spec.program_sha256))
        spec.validate()
        async with self._lock:
            targets = await self.fleet.agents(spec.selector)
            phases, canary = plan_phases(spec, targets)
            busy = await self._agents_in_active_rollouts()
            clash = sorted({a.agent_id for a in targets} & busy.keys())
            if clash:
                raise RolloutStateError(
                    f"agents {', '.join(clash[:5])} are already in rollout "
                    f"{busy[clash[0]]}: wait for it, or abort it first"
                )
            by_id = {a.agent_id: a for a in targets}
            now = self._now_ms()
            rollout = Rollout(
                rollout_id=uuid.uuid4().hex[:12],
                spec=spec,
                state=RUNNING,
                phase=0,
                phases=len(phases),
                stage=SHADOW if canary and spec.shadow else INSTALL,
                stage_started_unix_ms=now,
                created_unix_ms=now,
                updated_unix_ms=now,
                canary=canary,
                agents=[
                    RolloutAgent(agent_id, index, by_id[agent_id].program_sha256, PENDING, "", now)
                    for index, ids in enumerate(phases)
                    for agent_id in ids
                ],
            )
            sizes = "+".join(str(len(ids)) for ids in phases)
            created = await self.store.create(
                rollout,
                [
                    f"created: program {spec.program_sha256[:12]} to {len(targets)} agents "
                    f"({'canary ' if canary else ''}{sizes})"
                ],
            )
            log.info("rollouts.created", rollout=created.rollout_id, targets=len(targets))
        self._notify()
        if self._announce is not None and not self._leader():
            await self._announce_version(created)  # the leader steps it from here
        return await self.step(created.rollout_id)

    async def get(self, rollout_id: str) -> Rollout:
        return await self.store.get(rollout_id)

    async def list_rollouts(self, *, active_only: bool = False) -> list[Rollout]:
        return await self.store.list_rollouts(active_only=active_only)

    async def pause(self, rollout_id: str, reason: str = "") -> Rollout:
        async with self._lock:
            rollout = await self.store.get(rollout_id)
            if rollout.state == PAUSED:
                return rollout
            if rollout.state != RUNNING:
                raise RolloutStateError(
                    f"rollout {rollout_id} is {rollout.state}: only a running rollout can pause"
                )
            rollout.state = PAUSED
            return await self._commit(rollout, [f"paused{': ' + reason if reason else ''}"])

    async def resume(self, rollout_id: str) -> Rollout:
        async with self._lock:
            rollout = await self.store.get(rollout_id)
            if rollout.state == RUNNING:
                return rollout
            if rollout.state != PAUSED:
                raise RolloutStateError(
                    f"rollout {rollout_id} is {rollout.state}: only a paused rollout can resume"
                )
            rollout.state = RUNNING
            rollout.stage_started_unix_ms = self._now_ms()
            await self._commit(
                rollout, [f"resumed: {rollout.stage} of phase {rollout.phase} restarts"]
            )
        return await self.step(rollout_id)

    async def abort(self, rollout_id: str, reason: str = "") -> Rollout:
        async with self._lock:
            rollout = await self.store.get(rollout_id)
            if rollout.state not in (RUNNING, PAUSED):
                raise RolloutStateError(
                    f"rollout {rollout_id} is {rollout.state}: only a running or paused "
                    "rollout can be aborted"
                )
            for agent in rollout.agents:
                if agent.status == SHADOWING:
                    self._assign(agent.agent_id, "", shadow_sha256="")
                    self._set(agent, PENDING, "shadow cleared by abort")
            rollout.state = ABORTED
            rollout.reason = reason or "aborted by request"
            return await self._commit(
                rollout, [f"aborted: {rollout.reason}; agents keep what they run"]
            )

    async def rollback(self, rollout_id: str, reason: str = "") -> Rollout:
        async with self._lock:
            rollout = await self.store.get(rollout_id)
            if rollout.state in (ROLLING_BACK, ROLLED_BACK):
                raise RolloutStateError(f"rollout {rollout_id} is already {rollout.state}")
            self._begin_rollback(rollout, reason or "rollback requested")
            await self._commit(rollout, [f"rolling back: {rollout.reason}"])
        return await self.step(rollout_id)

    # -- the state machine -----------------------------------------------------------------

    async def step_all(self) -> float:
        """Step every active rollout; the seconds until the earliest deadline among them."""
        watched: set[str] = set()
        deadlines: list[int] = []
        stepped: list[Rollout] = []
        for rollout in await self.store.list_rollouts(active_only=True):
            if rollout.state != PAUSED:
                rollout = await self.step(rollout.rollout_id)
            stepped.append(rollout)
            if rollout.state in ACTIVE_STATES:
                watched.update(a.agent_id for a in rollout.agents)
                deadlines.extend(_deadlines(rollout))
        self._watched = watched
        now = self._now_ms()
        self._wants_telemetry = any(
            r.state == RUNNING
            and r.stage == SHADOW
            and now >= r.stage_started_unix_ms + r.spec.bake_s * 1000
            for r in stepped
        )
        if any(now - JUST_DUE_MS < d <= now for d in deadlines):
            return COALESCE_S  # one fell due while stepping: look again at once
        upcoming = [(d - now) / 1000.0 for d in deadlines if d > now]
        return min([MAX_SLEEP_S, *upcoming])

    def changed_elsewhere(self, rollout_id: str = "", version: int = 0) -> None:
        """Another replica committed a rollout change (or created one): wake this one's
        watchers and, if it leads, its loop. Its own announcement coming back is not news
        (it would only step again)."""
        if rollout_id and self._announced.get(rollout_id) == version:
            return
        self._notify()

    async def _announce_version(self, rollout: Rollout) -> None:
        if self._announce is not None:
            self._announced[rollout.rollout_id] = rollout.version
            await self._announce(rollout.rollout_id, rollout.version)

    async def step(self, rollout_id: str) -> Rollout:
        """Advance one rollout as far as the fleet's reported state allows; commit if it moved."""
        if not self._leader():
            return await self.store.get(rollout_id)
        async with self._lock:
            rollout = await self.store.get(rollout_id)
            before = _fingerprint(rollout)
            agents_before = [(a.status, a.detail) for a in rollout.agents]
            events: list[str] = []
            if rollout.state == RUNNING:
                await self._step_running(rollout, events)
            elif rollout.state == ROLLING_BACK:
                await self._step_rolling_back(rollout, events)
            if _fingerprint(rollout) == before and not events:
                await self._flush_assignments()
                return rollout
            changed = [
                agent
                for agent, old in zip(rollout.agents, agents_before, strict=True)
                if (agent.status, agent.detail) != old
            ]
            return await self._commit(rollout, events, changed)

    async def _step_running(self, rollout: Rollout, events: list[str]) -> None:
        spec = rollout.spec
        candidate = spec.program_sha256
        now = self._now_ms()
        views = await self._views(rollout)
        # Late news from earlier phases: an offline agent that came back and installed.
        for agent in rollout.agents_through(rollout.phase):
            if agent.status in (INSTALLING, OFFLINE):
                self._track_install(rollout, agent, views.get(agent.agent_id), now, events)
        failed = [a for a in rollout.agents if a.status == FAILED]
        install = gate_rules.install_gate(len(failed), spec.max_failed_installs)
        if not install.passed:
            rollout.gates = [install]
            names = ", ".join(f"{a.agent_id} ({a.detail})" for a in failed[:5])
            self._begin_rollback(rollout, f"installs failed on {names}")
            events.append(f"rolling back: {rollout.reason}")
            return

        phase_agents = rollout.agents_in(rollout.phase)
        elapsed_s = (now - rollout.stage_started_unix_ms) / 1000.0
        if rollout.stage == SHADOW:
            for agent in phase_agents:
                if agent.status == PENDING:
                    self._assign(agent.agent_id, "", shadow_sha256=candidate)
                    self._set(agent, SHADOWING, "", now)
            if elapsed_s < spec.bake_s:
                return
            telemetry = await self.fleet.telemetry(
                [a.agent_id for a in phase_agents],
                rollout.stage_started_unix_ms,
                shadow_sha256=candidate,
            )
            # Too little live input yet: keep shadowing, up to the install timeout more.
            needed = max(1, spec.gates.min_shadow_frames)
            if (
                telemetry.shadow_frames < needed
                and elapsed_s < spec.bake_s + spec.install_timeout_s
            ):
                return
            results = gate_rules.shadow_gates(spec.gates, telemetry)
            rollout.gates = results
            failing = [g for g in results if not g.passed]
            if failing:
                self._begin_rollback(rollout, _describe(failing, "canary shadow"))
                events.append(f"rolling back: {rollout.reason}")
                return
            events.append(f"canary shadow passed: {_summary(results)}")
            self._enter(rollout, INSTALL, now)

        if rollout.stage == INSTALL:
            for agent in phase_agents:
                if agent.status in (PENDING, SHADOWING):
                    self._assign(agent.agent_id, candidate)
                    self._set(agent, INSTALLING, "", now)
                    self._track_install(rollout, agent, views.get(agent.agent_id), now, events)
            if any(a.status == INSTALLING for a in phase_agents):
                return
            failed = [a for a in rollout.agents if a.status == FAILED]
            install = gate_rules.install_gate(len(failed), spec.max_failed_installs)
            if not install.passed:
                rollout.gates = [install]
                self._begin_rollback(rollout, f"installs failed on {len(failed)} agents")
                events.append(f"rolling back: {rollout.reason}")
                return
            installed = sum(a.status == INSTALLED for a in phase_agents)
            events.append(
                f"{_phase_name(rollout)}: installed on {installed}/{len(phase_agents)} agents"
                + _offline_note(phase_agents)
                + f", baking {spec.bake_s:g}s"
            )
            self._enter(rollout, BAKE, now)
            elapsed_s = 0.0

        if rollout.stage == BAKE:
            if elapsed_s < spec.bake_s:
                return
            running = [
                a.agent_id for a in rollout.agents_through(rollout.phase) if a.status == INSTALLED
            ]
            telemetry = await self.fleet.telemetry(
                running, rollout.stage_started_unix_ms, program_sha256=candidate
            )
            results = [install, *gate_rules.bake_gates(spec.gates, telemetry)]
            rollout.gates = results
            failing = [g for g in results if not g.passed]
            if failing:
                self._begin_rollback(rollout, _describe(failing, _phase_name(rollout)))
                events.append(f"rolling back: {rollout.reason}")
                return
            events.append(f"{_phase_name(rollout)} passed its gates: {_summary(results)}")
            if rollout.phase + 1 >= rollout.phases:
                rollout.state = SUCCEEDED
                done = sum(a.status == INSTALLED for a in rollout.agents)
                rollout.reason = f"installed on {done}/{len(rollout.agents)} agents"
                events.append(f"succeeded: {rollout.reason}" + _offline_note(rollout.agents))
                return
            rollout.phase += 1
            self._enter(rollout, INSTALL, now)
            await self._step_running(rollout, events)

    def _track_install(
        self,
        rollout: Rollout,
        agent: RolloutAgent,
        view: AgentView | None,
        now: int,
        events: list[str],
    ) -> None:
        candidate = rollout.spec.program_sha256
        if view is None:
            if agent.status != OFFLINE:
                self._set(agent, OFFLINE, "agent no longer known to the fleet", now)
            return
        if view.program_sha256 == candidate:
            if agent.status == OFFLINE:
                events.append(f"{agent.agent_id} came back and installed the program")
            self._set(agent, INSTALLED, "", now)
            return
        if (
            view.install_sha256 == candidate
            and view.install_status in FAILED_INSTALL_STATUSES
            and view.install_unix_ms >= agent.status_unix_ms
        ):
            detail = f"{view.install_status.lower()}: {view.install_reason or 'no reason given'}"
            self._set(agent, FAILED, detail, now)
            events.append(f"{agent.agent_id} install {detail}")
            return
        if agent.status == INSTALLING:
            waited_s = (now - agent.status_unix_ms) / 1000.0
            if waited_s >= rollout.spec.install_timeout_s:
                if view.connected:
                    self._set(agent, FAILED, f"timeout: not installed after {waited_s:.0f}s", now)
                    events.append(f"{agent.agent_id} install timed out")
                else:
                    self._set(agent, OFFLINE, "disconnected: installs when it reconnects", now)
                    events.append(f"{agent.agent_id} is offline: it installs when it reconnects")

    def _begin_rollback(self, rollout: Rollout, reason: str) -> None:
        rollout.state = ROLLING_BACK
        rollout.reason = reason
        rollout.stage = Stage.NONE
        rollout.stage_started_unix_ms = self._now_ms()
        log.warning("rollouts.rolling_back", rollout=rollout.rollout_id, reason=reason)

    async def _step_rolling_back(self, rollout: Rollout, events: list[str]) -> None:
        candidate = rollout.spec.program_sha256
        now = self._now_ms()
        views = await self._views(rollout)
        for agent in rollout.agents:
            if agent.status == PENDING:
                continue
            view = views.get(agent.agent_id)
            if agent.status == SHADOWING:
                self._assign(agent.agent_id, "", shadow_sha256="")
                self._set(agent, AGENT_ROLLED_BACK, "shadow cleared", now)
            elif agent.status in TOUCHED - {AGENT_ROLLING_BACK}:
                self._assign_rollback(rollout, agent, view)
                self._set(agent, AGENT_ROLLING_BACK, "", now)
            if agent.status == AGENT_ROLLING_BACK:
                if view is not None and view.program_sha256 != candidate:
                    self._set(agent, AGENT_ROLLED_BACK, f"runs {view.program_sha256[:12]}", now)
                elif (now - agent.status_unix_ms) / 1000.0 >= rollout.spec.install_timeout_s:
                    offline = view is None or not view.connected
                    self._set(
                        agent,
                        AGENT_ROLLED_BACK,
                        "offline: rolls back when it reconnects"
                        if offline
                        else "did not confirm the rollback in time",
                        now,
                    )
        if all(a.status in (PENDING, AGENT_ROLLED_BACK) for a in rollout.agents):
            rollout.state = ROLLED_BACK
            back = sum(a.status == AGENT_ROLLED_BACK for a in rollout.agents)
            events.append(f"rolled back {back} agents: {rollout.reason}")

    def _assign_rollback(
        self, rollout: Rollout, agent: RolloutAgent, view: AgentView | None
    ) -> None:
        """Desired state back to what the agent ran before the rollout.

        An agent running the candidate (or not heard from) goes back to its previous
        slot; one that never got the candidate only has its desired state reset, so it
        does not install the candidate when it reconnects.
        """
        if view is None or view.program_sha256 == rollout.spec.program_sha256:
            self._assign(agent.agent_id, agent.from_sha256, rollback=True)
        else:
            self._assign(agent.agent_id, agent.from_sha256)

    # -- helpers ---------------------------------------------------------------------------

    async def wait_for_change(self, rollout_id: str, version: int, timeout_s: float) -> Rollout:
        """The rollout once its version passes ``version`` (or as it is after the timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            changed = self._changed  # before reading: a commit after the read sets it
            rollout = await self.store.get(rollout_id)
            remaining = deadline - time.monotonic()
            if rollout.version != version or remaining <= 0:
                return rollout
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _assign(
        self, agent_id: str, sha256: str, *, shadow_sha256: str = "", rollback: bool = False
    ) -> None:
        """An agent's new desired state, stored (in one transaction with the step's others)
        just before the step commits."""
        self._pending.append(Assignment(agent_id, sha256, shadow_sha256, rollback))

    async def _flush_assignments(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await self.assigner.assign_many(pending)

    async def _commit(
        self, rollout: Rollout, events: list[str], changed: list[RolloutAgent] | None = None
    ) -> Rollout:
        await self._flush_assignments()  # the fleet stores them before the step commits
        rollout.updated_unix_ms = self._now_ms()
        saved = await self.store.save(rollout, events, changed)
        for message in events:
            log.info("rollouts.event", rollout=rollout.rollout_id, message=message)
        self._notify()
        await self._announce_version(saved)
        return saved

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        self._wake.set()  # the run loop refreshes its deadlines and watched agents

    def _enter(self, rollout: Rollout, stage: Stage, now: int) -> None:
        rollout.stage = stage
        rollout.stage_started_unix_ms = now

    def _set(
        self, agent: RolloutAgent, status: AgentStatus, detail: str, now: int | None = None
    ) -> None:
        if agent.status != status or agent.detail != detail:
            agent.status = status
            agent.detail = detail
            agent.status_unix_ms = self._now_ms() if now is None else now

    async def _views(self, rollout: Rollout) -> dict[str, AgentView]:
        return {view.agent_id: view for view in await self.fleet.agents(rollout.spec.selector)}

    async def _agents_in_active_rollouts(self) -> dict[str, str]:
        return {
            agent.agent_id: rollout.rollout_id
            for rollout in await self.store.list_rollouts(active_only=True)
            for agent in rollout.agents
        }

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _deadlines(rollout: Rollout) -> list[int]:
    """When (unix ms) a rollout's state changes with no event from the fleet: a bake or
    shadow period ends, the extra wait for shadow frames ends, an install times out."""
    spec = rollout.spec
    bake_ms, timeout_ms = int(spec.bake_s * 1000), int(spec.install_timeout_s * 1000)
    started = rollout.stage_started_unix_ms
    found: list[int] = []
    if rollout.state == RUNNING:
        if rollout.stage in (SHADOW, BAKE):
            found.append(started + bake_ms)
        if rollout.stage == SHADOW:
            found.append(started + bake_ms + timeout_ms)
        found.extend(
            a.status_unix_ms + timeout_ms for a in rollout.agents if a.status == INSTALLING
        )
    elif rollout.state == ROLLING_BACK:
        found.extend(
            a.status_unix_ms + timeout_ms for a in rollout.agents if a.status == AGENT_ROLLING_BACK
        )
    return found


def _fingerprint(rollout: Rollout) -> tuple[object, ...]:
    return (
        rollout.state,
        rollout.phase,
        rollout.stage,
        rollout.stage_started_unix_ms,
        rollout.reason,
        tuple(rollout.gates),
        tuple((a.status, a.detail) for a in rollout.agents),
    )


def _phase_name(rollout: Rollout) -> str:
    if rollout.canary and rollout.phase == 0:
        return "canary"
    return f"wave {rollout.phase if rollout.canary else rollout.phase + 1}"


def _describe(failing: list[GateResult], where: str) -> str:
    return f"{where} failed " + "; ".join(
        f"{g.name} {g.value:.4g} (limit {g.threshold:g}): {g.detail}" for g in failing
    )


def _summary(results: list[GateResult]) -> str:
    return ", ".join(f"{g.name} {g.value:.4g}" for g in results) or "no gates"


def _offline_note(agents: list[RolloutAgent]) -> str:
    offline = sum(a.status == OFFLINE for a in agents)
    return f" ({offline} offline, they install on reconnect)" if offline else ""


__all__ = ["ACTIVE_STATES", "FINAL_STATES", "RolloutController"]
