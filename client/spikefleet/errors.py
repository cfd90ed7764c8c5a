"""The exceptions spikefleet raises, as one small hierarchy.

Catch :class:`SpikefleetError` for "anything spikefleet refused"; catch a
subclass when the caller can do something specific about it. Every message
names the problem and, where there is one, the way out.
"""

from __future__ import annotations


class SpikefleetError(Exception):
    """Base of every error spikefleet raises on purpose."""


class ProgramFormatError(SpikefleetError):
    """Program bytes or a Program object are malformed or inconsistent."""


class SignatureError(SpikefleetError):
    """A signed program failed verification.

    ``reason`` is one of ``"tampered"``, ``"truncated"``, ``"unknown-key"``,
    ``"malformed"`` so callers (and telemetry) can tell them apart; loading a
    file that must be signed but is a plain program gives ``"unsigned"``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class KeyFileError(SpikefleetError):
    """A signing or public key file is missing, unreadable or not an Ed25519 key."""


class EngineError(SpikefleetError):
    """The engine cannot run this program on this input."""


class FrameError(EngineError):
    """Input frames have the wrong shape, dtype or bit range for the program."""


class EventFormatError(SpikefleetError):
    """Event data (N-MNIST, AEDAT4, packets) is malformed."""


class ConversionError(SpikefleetError):
    """A model could not be converted to an Akida program."""


class IncompatibleModelError(ConversionError):
    """The model uses something Akida 1.0 cannot run.

    ``layer`` names the offending layer, ``remedy`` says what to do instead.
    """

    def __init__(self, message: str, layer: str = "", remedy: str = "") -> None:
        super().__init__(f"{message} ({remedy})" if remedy else message)
        self.layer = layer
        self.remedy = remedy


class UnsupportedLayerError(SpikefleetError):
    """An Akida model contains a layer type spikefleet programs cannot carry."""


class AkidaUnavailableError(SpikefleetError):
    """BrainChip's ``akida`` package is needed but not installed."""

    def __init__(self, what: str = "this") -> None:
        super().__init__(f"{what} needs BrainChip's akida package: pip install 'spikefleet[akida]'")


class HardwareMappingError(SpikefleetError):
    """A program does not fit, or is not compatible with, an Akida device.

    The message carries akida's own reason (e.g. "Only padding same is supported").
    """


class DeviceError(SpikefleetError):
    """A device backend cannot be opened or used."""


class DeviceBusyError(DeviceError):
    """Another process owns this device (or agent state directory)."""


class InstallError(SpikefleetError):
    """A program could not be fetched, verified or installed on the agent.

    ``reason`` is short and machine-readable (``"fetch"``, ``"sha256"``,
    ``"tampered"``, ``"load"``, ...) because it travels to the server.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class AgentConfigError(SpikefleetError):
    """The agent's configuration file is missing, unreadable or inconsistent."""


class DatasetError(SpikefleetError):
    """A dataset is missing, incomplete or does not match its index."""


class RolloutError(SpikefleetError):
    """A rollout request was refused or a rollout cannot do what was asked."""


class RolloutSpecError(RolloutError):
    """A rollout specification is invalid (selector, canary, waves, bake, gates)."""


class RolloutNotFoundError(RolloutError):
    """No rollout has this id."""


class RolloutStateError(RolloutError):
    """The rollout's state (or another active rollout on the same agents) forbids this."""


class RegistryError(SpikefleetError):
    """The program registry refused a request."""


class ProgramNotFoundError(RegistryError):
    """No stored program matches this sha256, prefix or name/version."""


class ProgramInUseError(RegistryError):
    """The program is run by (or assigned to) agents, so it cannot be deleted."""


class ServerConfigError(SpikefleetError):
    """spikefleet-server's configuration (file, environment, flags) is invalid."""


class ServerError(SpikefleetError):
    """The server answered a call with an error; ``code`` is the gRPC status name."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.code))


class ServerUnavailableError(ServerError):
    """The server cannot be reached (address, network, TLS handshake)."""


class AuthError(ServerError):
    """The server refused the caller: missing/wrong token or a role too low for the call."""


class NotFoundError(ServerError):
    """The server has no such object (program, agent, rollout)."""


class InvalidRequestError(ServerError):
    """The server rejected the request's content (bad model, bad options, truncated upload)."""


class QuotaError(ServerError):
    """The request exceeds a server limit (e.g. the upload size limit)."""


class AmbiguousReferenceError(SpikefleetError):
    """A name or prefix fits several programs, rollouts or agents; ``candidates`` lists
    each the way it can be named unambiguously."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class ConflictError(ServerError):
    """The object's state forbids this (e.g. deleting a program agents run)."""


class AgentRequestError(SpikefleetError):
    """An agent's inference API refused or failed a call; ``code`` is the gRPC status name."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code
