"""spikefleet's int4 engine: Akida 1.0 programs run bit-exactly, in C kernels driven from numpy."""

from spikefleet.engine.engine import Engine, EngineResult

__all__ = ["Engine", "EngineResult"]
