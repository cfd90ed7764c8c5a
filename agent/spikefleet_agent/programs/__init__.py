"""Signed programs on the agent's disk: A/B slots and the atomic active pointer."""

from spikefleet_agent.programs.slots import SlotProgram, SlotState, SlotStore

__all__ = ["SlotProgram", "SlotState", "SlotStore"]
