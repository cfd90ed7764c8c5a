"""Real SNNTorch networks the converter tests feed in: convertible ones and offenders."""

from __future__ import annotations

import numpy as np
import snntorch as snn
import torch
from torch import nn


class RefLikeNet(nn.Module):
    """The reference topology: conv s2 -> Leaky -> conv s2 -> GAP -> Leaky -> FC -> Leaky.

    conv1 pads like Akida's 'same' does on a 34-pixel input (0 before, 1 after);
    ``torch_padding=True`` uses torch's padding=1 instead, which Akida cannot match.
    """

    def __init__(self, seed: int = 0, beta: float = 0.0, torch_padding: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.pad = nn.Identity() if torch_padding else nn.ZeroPad2d((0, 1, 0, 1))
        self.conv1 = nn.Conv2d(2, 32, 3, stride=2, padding=1 if torch_padding else 0)
        self.lif1 = snn.Leaky(beta=beta)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.lif2 = snn.Leaky(beta=beta)
        self.fc1 = nn.Linear(64, 10)
        self.lif3 = snn.Leaky(beta=beta)
        with torch.no_grad():  # make both hidden layers spike at useful rates
            self.conv1.weight.mul_(2.0)
            self.conv2.weight.mul_(6.0)
            self.conv2.bias.add_(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = self.conv1(self.pad(x))
        spk1, _ = self.lif1(current, torch.zeros_like(current))
        current = self.pool(self.conv2(spk1)).flatten(1)
        spk2, _ = self.lif2(current, torch.zeros_like(current))
        current = self.fc1(spk2)
        _, mem3 = self.lif3(current, torch.zeros_like(current))
        return mem3


REF_ARCH = "Input(34,34,2) Pad(0,1,0,1) Conv(32,3,s2,p0) Leaky Conv(64,3,s2) GAP Leaky FC(10) Leaky"


class SeedFCNet(nn.Module):
    """The seed document's CompatibleFCSNN, at a test-friendly size."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(2 * 8 * 8, 32)
        self.lif1 = snn.Leaky(beta=0.0, threshold=0.5)
        self.fc2 = nn.Linear(32, 10)
        self.lif2 = snn.Leaky(beta=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = self.fc1(x.flatten(1))
        spk, _ = self.lif1(current, torch.zeros_like(current))
        current = self.fc2(spk)
        _, mem = self.lif2(current, torch.zeros_like(current))
        return mem


def random_frames(n: int, shape: tuple[int, int, int] = (34, 34, 2), seed: int = 0) -> np.ndarray:
    """Sparse 4-bit event-count frames (N, H, W, C), like DVS input."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 16, size=(n, *shape))
    active = rng.random((n, *shape)) < 0.3
    return (counts * active).astype(np.uint8)


def to_input(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float()


class Chain(nn.Module):
    """Layers called one after another; neurons pass their spikes on, and the
    model returns the last neuron's membrane (or the last layer's output)."""

    def __init__(self, *layers: nn.Module, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = x
        for layer in self.layers:
            # A Leaky called without a membrane keeps its last one: start fresh every call.
            out = layer(x, torch.zeros_like(x)) if type(layer) is snn.Leaky else layer(x)
            if isinstance(out, tuple):
                x, result = out[0], out[-1]
            else:
                x = result = out
        return result


class Residual(nn.Module):
    """conv -> Leaky -> conv + skip -> Leaky: a residual path Akida 1.0 cannot run."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.0)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.lif2 = snn.Leaky(beta=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spk, _ = self.lif1(self.conv1(x))
        _, mem = self.lif2(self.conv2(spk) + spk)
        return mem
