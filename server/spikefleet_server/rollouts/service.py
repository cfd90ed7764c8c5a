"""The Rollouts gRPC servicer: requests in, controller calls, status codes out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
from spikefleet_server.rollouts.convert import agent_to_proto, rollout_to_proto, spec_from_proto
from spikefleet_server.rollouts.model import FINAL_STATES

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


def _abort(context: grpc.ServicerContext, exc: RolloutError) -> NoReturn:
    context.abort(_code(exc), str(exc))
    raise AssertionError("grpc's abort raises")


def _call(context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except RolloutError as exc:
        _abort(context, exc)


def _need_id(context: grpc.ServicerContext, rollout_id: str) -> str:
    if not rollout_id:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rollout_id is empty")
    return rollout_id


class RolloutsServicer(rollout_pb2_grpc.RolloutsServicer):
    def __init__(self, controller: RolloutController) -> None:
        self.controller = controller

    def ListAgents(
        self, request: rollout_pb2.ListAgentsRequest, context: grpc.ServicerContext
    ) -> rollout_pb2.ListAgentsResponse:
        agents = self.controller.fleet.agents(dict(request.selector) or None)
        return rollout_pb2.ListAgentsResponse(agents=[agent_to_proto(a) for a in agents])

    def CreateRollout(
        self, request: rollout_pb2.CreateRolloutRequest, context: grpc.ServicerContext
    ) -> rollout_pb2.Rollout:
        if not request.HasField("spec"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "CreateRolloutRequest.spec is missing")
        spec = spec_from_proto(request.spec)
        return rollout_to_proto(_call(context, lambda: self.controller.create(spec)))

    def GetRollout(
        self, request: rollout_pb2.GetRolloutRequest, context: grpc.ServicerContext
    ) -> rollout_pb2.Rollout:
        rollout_id = _need_id(context, request.rollout_id)
        return rollout_to_proto(_call(context, lambda: self.controller.get(rollout_id)))

    def ListRollouts(
        self, request: rollout_pb2.ListRolloutsRequest, context: grpc.ServicerContext
    ) -> rollout_pb2.ListRolloutsResponse:
        rollouts = self.controller.list_rollouts(active_only=request.active_only)
        return rollout_pb2.ListRolloutsResponse(rollouts=[rollout_to_proto(r) for r in rollouts])

    def WatchRollout(
        self, request: rollout_pb2.GetRolloutRequest, context: grpc.ServicerContext
    ) -> Iterator[rollout_pb2.Rollout]:
        rollout_id = _need_id(context, request.rollout_id)
        rollout = _call(context, lambda: self.controller.get(rollout_id))
        yield rollout_to_proto(rollout)
        while rollout.state not in FINAL_STATES and context.is_active():
            version = rollout.version
            rollout = self.controller.wait_for_change(rollout_id, version, WATCH_POLL_S)
            if rollout.version != version:
                yield rollout_to_proto(rollout)

    def PauseRollout(
        self, request: rollout_pb2.RolloutActionRequest, context: grpc.ServicerContext
    ) -> rollout_pb2.Rollout:
        rollout_id = _need_id(context, request.rollout_id)
        return rollout_to_proto(
            _call(context, lambda: self.controller.pause(rollout_id, request.reason))
        )

    def ResumeRollout(
        self, request: rollout_pb2.RolloutActionRequest, context: grpc.ServicerContext
    ) -> rollout_pb2.Rollout:
        rollout_id = _need_id(context, request.rollout_id)
        return rollout_to_proto(_call(context, lambda: self.controller.resume(rollout_id)))

    def AbortRollout(
        self, request: rollout_pb2.RolloutActionRequest, context: grpc.ServicerContext
    ) -> rollout_pb2.Rollout:
        rollout_id = _need_id(context, request.rollout_id)
        return rollout_to_proto(
            _call(context, lambda: self.controller.abort(rollout_id, request.reason))
        )

    def RollbackRollout(
        self, request: rollout_pb2.RolloutActionRequest, context: grpc.ServicerContext
    ) -> rollout_pb2.Rollout:
        rollout_id = _need_id(context, request.rollout_id)
        return rollout_to_proto(
            _call(context, lambda: self.controller.rollback(rollout_id, request.reason))
        )


def add_to_server(controller: RolloutController, server: grpc.Server) -> None:
    rollout_pb2_grpc.add_RolloutsServicer_to_server(RolloutsServicer(controller), server)
