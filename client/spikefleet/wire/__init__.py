"""Each service's domain types and their one mapping to and from the wire.

The client and the server both import these: a message is converted in one
place, with its defaults defined once. One module per service:
:mod:`~spikefleet.wire.registry` (programs), :mod:`~spikefleet.wire.converter`
(conversion progress), :mod:`~spikefleet.wire.rollouts` (rollouts and the agents
they target), :mod:`~spikefleet.wire.telemetry` (the telemetry summary) and
:mod:`~spikefleet.wire.fleet` (operator calls on agents). They import protobuf
and nothing else heavy.
Types are plain dataclasses, states ``StrEnum``s whose values are the wire's.
"""
