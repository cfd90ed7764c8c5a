"""The reference spiking network for N-DIGITS, as SNNTorch modules.

Topology (pinned so the converter maps it onto Akida 1.0 exactly, no shifted windows):

    pad1   ZeroPad2d((0, 1, 0, 1))                  Akida's 'same' for 34 px at stride 2
    conv1  Conv2d(2, 32, 3, stride=2, padding=0)    34x34 -> 17x17
    lif1   Leaky(beta=0)                            1-bit spikes
    conv2  Conv2d(32, 64, 3, stride=2, padding=1)   17x17 -> 9x9 (Akida 'same' pads 1/1 here)
    lif2   Leaky(beta=0)                            1-bit spikes
    flat   Flatten                                  9*9*64 = 5,184 spikes
    fc1    Linear(5184, 10)
    lif3   Leaky(beta=0)                            read as membrane potential

Akida equivalent: InputData(34,34,2, 4 bit) -> Convolutional(32, 3x3, s2, same,
1-bit) -> Convolutional(64, 3x3, s2, same, 1-bit) -> FullyConnected(10, no
activation); it maps onto an AKD1000.

Why conv1 is padded by hand: torch's ``padding=1`` starts conv1's windows one
pixel before Akida's 'same' (TensorFlow's rule: 0 before, 1 after on 34 px at
stride 2), so such weights convert only with shifted windows, and their int4
accuracy collapsed (21%).

Why no pooling between conv2 and fc1, where the seed's N-MNIST topology has one
and the first version had a global average into ``Linear(64, 10)``: a global
average throws away where each feature fired, so the network classified a bag
of local features and stopped near 89%; keeping conv2's 9x9 map lets fc1 see the
digit's layout. The stride-2 convolutions already shrink the map 4x each. Max
pooling instead is no way out on an AKD1000: a convolution with max pooling
must be followed by another convolution there, not by a FullyConnected.

With beta=0 and a fresh zero membrane every call, each forward pass is one
stateless time step: a neuron spikes when its input current exceeds its
threshold (1.0), which is what Akida computes.

Input: float (B, 2, 34, 34) event counts 0..15 (see :func:`frames_to_input`);
output: lif3's membrane potential (B, 10), the class scores.
"""

from __future__ import annotations

import numpy as np
import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

#: conv2's output map, flattened into fc1.
CONV2_MAP = (64, 9, 9)


def _leaky() -> snn.Leaky:
    return snn.Leaky(beta=0.0, spike_grad=surrogate.atan())


class ReferenceNet(nn.Module):
    """N-DIGITS classifier; children are named as in the module docstring."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.pad1 = nn.ZeroPad2d((0, 1, 0, 1))
        self.conv1 = nn.Conv2d(2, 32, 3, stride=2, padding=0)
        self.lif1 = _leaky()
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.lif2 = _leaky()
        self.flat = nn.Flatten()
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(int(np.prod(CONV2_MAP)), 10)
        self.lif3 = _leaky()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_spikes(x)[-1]

    def forward_spikes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lif1 spikes, lif2 spikes, lif3 membrane) for one stateless time step."""
        current = self.conv1(self.pad1(x))
        spk1, _ = self.lif1(current, torch.zeros_like(current))
        current = self.conv2(spk1)
        spk2, _ = self.lif2(current, torch.zeros_like(current))
        current = self.fc1(self.drop(self.flat(spk2)))
        _, mem3 = self.lif3(current, torch.zeros_like(current))
        return spk1, spk2, mem3


def frames_to_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (N, 34, 34, 2) -> the float (N, 2, 34, 34) tensor the network takes."""
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float()
