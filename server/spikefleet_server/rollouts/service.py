"""The Rollouts gRPC servicer: requests in, controller calls, status codes out.

Every method is a coroutine on the server's loop; WatchRollout waits for the
controller's next commit without holding a thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import NoReturn, TypeVar

import grpc

from spikefleet.errors import (
    RolloutError,
    RolloutNotFoundError,
    RolloutSpecError,
    RolloutStateError,
)
from spikefleet.v1 import rollout_pb2, rollout_pb2_grpc
from spikefleet_server.auth import Role
from spikefleet_server.rollouts.controller import RolloutController
from spikefleet_server.rollouts.model import FINAL_STATES, RolloutSpec

T = TypeVar("T")

WATCH_POLL_S = 1.0

#: The role each method needs, for the server's auth table.
ROLES = {
    "ListAgents": Role.VIEWER,
    "GetRollout": Role.VIEWER,
    "ListRollouts": Role.VIEWER,
    "WatchRollout": Role.VIEWER,
    "CreateRollout": Role.DEPLOYER,
    "PauseRollout": Role.DEPLOYER,
    "ResumeRollout": Role.DEPLOYER,
    "AbortRollout": Role.DEPLOYER,
    "RollbackRollout": Role.DEPLOYER,
}
SERVICE_NAME = "spikefleet.v1.Rollouts"


def _code(exc: RolloutError) -> grpc.StatusCode:
    if isinstance(exc, RolloutSpecError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, RolloutNotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, RolloutStateError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.FAILED_PRECONDITION


async def _abort(context: grpc.aio.ServicerContext, exc: RolloutError) -> NoReturn:
    await context.abort(_code(exc), str(exc))
    raise AssertionError("grpc's abort raises")


async def _call(context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
    try:
        return await call
    except RolloutError as exc:
        await _abort(context, exc)


async def _need_id(context: grpc.aio.ServicerContext, rollout_id: str) -> str:
    if not rollout_id:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rollout_id is empty")
    return rollout_id


class RolloutsServicer(rollout_pb2_grpc.RolloutsServicer):
    def __init__(self, controller: RolloutController) -> None:
        self.controller = controller

    async def ListAgents(
        self, request: rollout_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> rollout_pb2.ListAgentsResponse:
        agents = await self.controller.fleet.agents(dict(request.selector) or None)
        return rollout_pb2.ListAgentsResponse(agents=[a.to_proto() for a in agents])

    async def CreateRollout(
        self, request: rollout_pb2.CreateRolloutRequest, context: grpc.aio.ServicerContext
    ) -> rollout_pb2.Rollout:
        if not request.HasField("spec"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "CreateRolloutRequest.spec is missing"
            )
        spec = RolloutSpec.from_proto(request.spec)
        return (await _call(context, self.controller.create(spec))).to_proto()

    async def GetRollout(
        self, request: rollout_pb2.GetRolloutRequest, context: grpc.aio.ServicerContext
    ) -> rollout_pb2.Rollout:
        rollout_id = await _need_id(context, request.rollout_id)
        return (await _call(context, self.controller.get(rollout_id))).to_proto()

    async def ListRollouts(
        self, request: rollout_pb2.ListRolloutsRequest, context: grpc.aio.ServicerContext
    ) -> rollout_pb2.ListRolloutsResponse:
        rollouts = await self.controller.list_rollouts(active_only=request.active_only)
        return rollout_pb2.ListRolloutsResponse(rollouts=[r.to_proto() for r in rollouts])

    async def WatchRollout(
        self, request: rollout_pb2.GetRolloutRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rollout_pb2.Rollout]:
        rollout_id = await _need_id(context, request.rollout_id)
        rollout = await _call(context, self.controller.get(rollout_id))
        yield rollout.to_proto()
        while rollout.state not in FINAL_STATES:
            version = rollout.version
            rollout = await self.controller.wait_for_change(rollout_id, version, WATCH_POLL_S)
            if rollout.version != version:
                yield rollout.to_proto()
            elif self.controller.stopping:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "the server is shutting down; watch again"
                )

    async def PauseRollout(
        self, request: rollout_pb2.RolloutActionRequest, context: grpc.aio.ServicerContext
    ) -> rollout_pb2.Rollout:
        rollout_id = await _need_id(context, request.rollout_id)
        return (await _call(context, self.controller.pause(rollout_id, request.reason))).to_proto()

    async def ResumeRollout(
        self, request: rollout_pb2.RolloutActionRequest, context: grpc.aio.ServicerContext
    ) -> rollout_pb2.Rollout:
        rollout_id = await _need_id(context, request.rollout_id)
        return (await _call(context, self.controller.resume(rollout_id))).to_proto()

    async def AbortRollout(
        self, request: rollout_pb2.RolloutActionRequest, context: grpc.aio.ServicerContext
    ) -> rollout_pb2.Rollout:
        rollout_id = await _need_id(context, request.rollout_id)
        return (await _call(context, self.controller.abort(rollout_id, request.reason))).to_proto()

    async def RollbackRollout(
        self, request: rollout_pb2.RolloutActionRequest, context: grpc.aio.ServicerContext
    ) -> rollout_pb2.Rollout:
        rollout_id = await _need_id(context, request.rollout_id)
        return (
            await _call(context, self.controller.rollback(rollout_id, request.reason))
        ).to_proto()
