"""Programs, keys and signed bytes for the agent and fleet tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikefleet.program.codec import encode
from spikefleet.program.model import (
    Activation,
    Convolutional,
    FullyConnected,
    InputData,
    Pooling,
    Program,
)
from spikefleet.program.signing import SigningKey, sign


def make_program(seed: int = 0, name: str = "agent-test") -> Program:
    """The reference network's shape with random int4 weights: thresholds low enough
    that sparse 4-bit frames make spikes, so predictions depend on the input."""
    rng = np.random.default_rng(seed)

    def weights(shape: tuple[int, ...]) -> np.ndarray:
        return rng.integers(-7, 8, size=shape).astype(np.int8)

    return Program(
        name=name,
        layers=[
            InputData("input", (34, 34, 2), 4),
            Convolutional(
                "conv1",
                weights((3, 3, 2, 32)),
                rng.integers(0, 8, 32).astype(np.int32),
                stride=2,
                activation=Activation(1, np.ones(32, np.float32)),
            ),
            Convolutional(
                "conv2",
                weights((3, 3, 32, 64)),
                rng.integers(0, 4, 64).astype(np.int32),
                stride=2,
                pooling=Pooling.GLOBAL_AVERAGE,
                activation=Activation(1, np.ones(64, np.float32)),
            ),
            FullyConnected("fc", weights((64, 10)), np.zeros(10, np.int32)),
        ],
        labels=[str(d) for d in range(10)],
        output_scales=np.full(10, 0.5, np.float32),
    )


def random_frames(n: int, seed: int = 0, density: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 16, size=(n, 34, 34, 2)).astype(np.uint8)
    frames[rng.random(frames.shape) > density] = 0
    return frames


def make_key(directory: Path, name: str = "server") -> SigningKey:
    """A fresh signing key whose public half is pinned as ``directory/<name>.pub``."""
    key = SigningKey.generate()
    directory.mkdir(parents=True, exist_ok=True)
    key.public_key.save(directory / f"{name}.pub")
    return key


def signed_program(program: Program, key: SigningKey) -> tuple[str, bytes]:
    """(sha256, SignedProgram bytes) of ``program``."""
    signed = sign(encode(program), key)
    return signed.sha256, signed.to_bytes()


def tamper(data: bytes) -> bytes:
    """Flip one bit in the middle of the program bytes (not in the envelope header)."""
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0x01
    return bytes(corrupted)
