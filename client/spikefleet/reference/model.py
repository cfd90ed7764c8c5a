"""The reference spiking network for N-DIGITS, as SNNTorch modules.

Topology (pinned so the converter can map it onto Akida 1.0):

    conv1  Conv2d(2, 32, 3, stride=2, padding=1)   34x34 -> 17x17
    lif1   Leaky(beta=0)                            1-bit spikes
    conv2  Conv2d(32, 64, 3, stride=2, padding=1)  17x17 -> 9x9
    pool   AdaptiveAvgPool2d(1)                     global average of potentials
    lif2   Leaky(beta=0)                            1-bit spikes (pool, then fire)
    fc1    Linear(64, 10)
    lif3   Leaky(beta=0)                            read as membrane potential

Akida equivalent: InputData(34,34,2, 4 bit) -> Convolutional(32, 3x3, s2, same,
1-bit) -> Convolutional(64, 3x3, s2, same, global average pool, 1-bit) ->
FullyConnected(10, no activation). With beta=0 and a fresh zero membrane every
call, each forward pass is one stateless time step: a neuron spikes when its
input current exceeds its threshold (1.0), which is what Akida computes.

Input: float (B, 2, 34, 34) event counts 0..15 (see :func:`frames_to_input`);
output: lif3's membrane potential (B, 10), the class scores.
"""

from __future__ import annotations

import numpy as np
import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

CONV2_INIT_GAIN = 8.0


def _leaky() -> snn.Leaky:
    return snn.Leaky(beta=0.0, spike_grad=surrogate.atan())


class ReferenceNet(nn.Module):
    """N-DIGITS classifier; children are named as in the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 32, 3, stride=2, padding=1)
        self.lif1 = _leaky()
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.lif2 = _leaky()
        self.fc1 = nn.Linear(64, 10)
        self.lif3 = _leaky()
        with torch.no_grad():
            # The global average divides conv2's output by 81 positions; a larger start
            # puts the pooled currents near lif2's threshold so gradients flow at all.
            self.conv2.weight.mul_(CONV2_INIT_GAIN)
            if self.conv2.bias is not None:
                self.conv2.bias.mul_(CONV2_INIT_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_spikes(x)[-1]

    def forward_spikes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lif1 spikes, lif2 spikes, lif3 membrane) for one stateless time step."""
        current = self.conv1(x)
        spk1, _ = self.lif1(current, torch.zeros_like(current))
        current = self.pool(self.conv2(spk1)).flatten(1)
        spk2, _ = self.lif2(current, torch.zeros_like(current))
        current = self.fc1(spk2)
        _, mem3 = self.lif3(current, torch.zeros_like(current))
        return spk1, spk2, mem3


def frames_to_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (N, 34, 34, 2) -> the float (N, 2, 34, 34) tensor the network takes."""
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float()
