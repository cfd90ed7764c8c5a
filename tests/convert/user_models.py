"""SNNTorch models written the way users (and snntorch's tutorials) write them.

Each is trained for a few dozen steps on a small synthetic event task (bars of
two orientations in two polarities, 16x16 pixels, three frames per sample), so
its spikes and scores mean something. ``ZOO`` lists them with how they are
extracted and what the converter must do with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import snntorch as snn
import torch
from snntorch import utils
from torch import nn

SIZE = 16
STEPS = 3
CLASSES = 4


def bars(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(frames (n, STEPS, SIZE, SIZE, 2) uint8, labels (n,)); class = orientation x polarity."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    frames = np.zeros((n, STEPS, SIZE, SIZE, 2), np.int64)
    for i, label in enumerate(labels):
        for t in range(STEPS):
            pos = int(rng.integers(3, SIZE - 3))
            count = int(rng.integers(3, 12))
            if label < 2:
                frames[i, t, pos - 1 : pos + 1, 2:-2, label % 2] = count
            else:
                frames[i, t, 2:-2, pos - 1 : pos + 1, label % 2] = count
    frames += (rng.random(frames.shape) < 0.05) * rng.integers(1, 8, frames.shape)
    return np.clip(frames, 0, 15).astype(np.uint8), labels


def to_torch(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, C) -> float (..., C, H, W)."""
    order = (*range(frames.ndim - 3), frames.ndim - 1, frames.ndim - 3, frames.ndim - 2)
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(order))).float()


# --- the tutorials' style: nn.Sequential with init_hidden, time loop outside -----------------


def tutorial_conv() -> nn.Module:
    """snntorch tutorial 7's net: 5x5 valid convs, MaxPool2d before each Leaky."""
    return nn.Sequential(
        nn.Conv2d(2, 8, 5),
        nn.MaxPool2d(2),
        snn.Leaky(beta=0.0, init_hidden=True),
        nn.Conv2d(8, 16, 5),
        nn.MaxPool2d(2),
        snn.Leaky(beta=0.0, init_hidden=True),
        nn.Flatten(),
        nn.Linear(16, CLASSES),
        snn.Leaky(beta=0.0, init_hidden=True, output=True),
    )


def pool_after_leaky() -> nn.Module:
    """Conv -> Leaky -> MaxPool2d: pooling the spikes, 'same' 3x3 convs."""
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1),
        snn.Leaky(beta=0.0, init_hidden=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        snn.Leaky(beta=0.0, init_hidden=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, CLASSES),
        snn.Leaky(beta=0.0, init_hidden=True, output=True),
    )


def fc_sequential() -> nn.Module:
    """Flatten -> Linear -> Leaky -> Linear -> Leaky(output=True), biases, init_hidden."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(2 * SIZE * SIZE, 48),
        snn.Leaky(beta=0.0, init_hidden=True, threshold=0.5),
        nn.Dropout(0.1),
        nn.Linear(48, CLASSES),
        snn.Leaky(beta=0.0, init_hidden=True, output=True),
    )


def strided_hardware_net() -> nn.Module:
    """The AKD1000-friendly topology: 3x3 stride-2 convs with Akida's 'same' padding."""
    return nn.Sequential(
        nn.ZeroPad2d((0, 1, 0, 1)),
        nn.Conv2d(2, 8, 3, stride=2),
        snn.Leaky(beta=0.0, init_hidden=True),
        nn.ZeroPad2d((0, 1, 0, 1)),
        nn.Conv2d(8, 16, 3, stride=2),
        snn.Leaky(beta=0.0, init_hidden=True),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, CLASSES),
        snn.Leaky(beta=0.0, init_hidden=True, output=True),
    )


# --- class-based models -----------------------------------------------------------------------


class TimeLoopFC(nn.Module):
    """snntorch tutorial 5: the forward loops over x[t] and returns stacked (spk, mem)."""

    def __init__(self, reset: str = "zero") -> None:
        super().__init__()
        self.fc1 = nn.Linear(2 * SIZE * SIZE, 48)
        self.lif1 = snn.Leaky(beta=0.0, reset_mechanism=reset, threshold=0.5)
        self.fc2 = nn.Linear(48, CLASSES)
        self.lif2 = snn.Leaky(beta=0.0, reset_mechanism=reset)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1 = self.lif1.reset_mem()
        mem2 = self.lif2.reset_mem()
        spk_rec, mem_rec = [], []
        for step in range(x.shape[0]):
            cur1 = self.fc1(x[step].flatten(1))
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


class BatchNormNet(nn.Module):
    """Conv -> BatchNorm2d -> Leaky, per frame, explicit fresh membranes; some gammas negative."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.lif1 = snn.Leaky(beta=0.0)
        self.pad2 = nn.ZeroPad2d((0, 1, 0, 1))  # Akida's 'same' at stride 2
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2)
        self.bn2 = nn.BatchNorm2d(16)
        self.lif2 = snn.Leaky(beta=0.0)
        self.fc = nn.Linear(16 * 8 * 8, CLASSES)
        self.lif3 = snn.Leaky(beta=0.0)
        with torch.no_grad():
            self.bn1.weight[::3] = -1.0
            self.bn2.weight[::4] = -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cur = self.bn1(self.conv1(x))
        spk1, _ = self.lif1(cur, torch.zeros_like(cur))
        cur = self.bn2(self.conv2(self.pad2(spk1)))
        spk2, _ = self.lif2(cur, torch.zeros_like(cur))
        cur = self.fc(spk2.flatten(1))
        _, mem = self.lif3(cur, torch.zeros_like(cur))
        return mem


class SpikesAndMembrane(nn.Module):
    """Returns ``(spk, mem)`` of the last layer, as ``snn.Leaky`` does."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2 * SIZE * SIZE, 32)
        self.lif1 = snn.Leaky(beta=0.0, threshold=0.5)
        self.fc2 = nn.Linear(32, CLASSES)
        self.lif2 = snn.Leaky(beta=0.0, threshold=0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cur = self.fc1(x.flatten(1))
        spk1, _ = self.lif1(cur, torch.zeros_like(cur))
        cur = self.fc2(spk1)
        return self.lif2(cur, torch.zeros_like(cur))


class Residual(nn.Module):
    """A skip connection: Akida 1.0 runs plain chains only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.0)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.lif2 = snn.Leaky(beta=0.0)
        self.fc = nn.Linear(4 * SIZE * SIZE, CLASSES)
        self.lif3 = snn.Leaky(beta=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spk1, _ = self.lif1(self.conv1(x), torch.zeros(1))
        spk2, _ = self.lif2(self.conv2(spk1) + spk1, torch.zeros(1))
        _, mem = self.lif3(self.fc(spk2.flatten(1)), torch.zeros(1))
        return mem


def average_of_spikes() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1),
        snn.Leaky(beta=0.0, init_hidden=True),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, CLASSES),
        snn.Leaky(beta=0.0, init_hidden=True, output=True),
    )


def leaky_with_memory() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(2 * SIZE * SIZE, 32),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(32, CLASSES),
        snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )


# --- how each style is run and trained ---------------------------------------------------------


def run_sequential(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The tutorials' loop: reset, then ``spk, mem = net(x[t])``; scores = summed membranes."""
    utils.reset(net)
    total = 0.0
    for step in range(x.shape[0]):
        _, mem = net(x[step])
        total = total + mem
    return total  # type: ignore[return-value]


def run_time_loop(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    _, mem = net(x)
    return mem.sum(0)


def run_per_frame(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    t, b = x.shape[:2]
    out = net(x.reshape(t * b, *x.shape[2:]))
    mem = out[1] if isinstance(out, tuple) else out
    return mem.reshape(t, b, -1).sum(0)


def run_spike_counts(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    t, b = x.shape[:2]
    spk, _ = net(x.reshape(t * b, *x.shape[2:]))
    return spk.reshape(t, b, -1).sum(0)


def train(
    net: nn.Module,
    run: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    frames: np.ndarray,
    labels: np.ndarray,
    epochs: int = 3,
    seed: int = 0,
) -> nn.Module:
    """A few epochs of Adam on the summed scores (cross entropy); tiny by design."""
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: threads only contend on a shared machine
    x = to_torch(frames).transpose(0, 1)  # (T, N, C, H, W)
    y = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(epochs):
        order = torch.randperm(x.shape[1])
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            loss = nn.functional.cross_entropy(run(net, x[:, batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    torch.set_num_threads(threads)
    return net.eval()


def accuracy(
    net: nn.Module,
    run: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    frames: np.ndarray,
    labels: np.ndarray,
) -> float:
    with torch.no_grad():
        scores = run(net, to_torch(frames).transpose(0, 1))
    return float((scores.argmax(1).numpy() == labels).mean())


@dataclass
class UserModel:
    """A model, how it runs, what ``extract`` is given, and what the converter must do.

    ``sample`` is "sequence" (x of shape (T, N, ...)) or "frame" ((N, ...)).
    ``refusal`` (layer, words) for a model the converter must refuse in one line;
    ``flags`` are the CLI flags a convertible model needs (e.g. --no-hardware).
    """

    build: Callable[[], nn.Module]
    run: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    sample: str = "frame"
    flags: list[str] = field(default_factory=list)
    refusal: tuple[str, str] | None = None
    readout: str = "potential"
    trained: bool = True


ZOO: dict[str, UserModel] = {
    "tutorial-conv-maxpool": UserModel(
        tutorial_conv, run_sequential, "sequence", flags=["--no-hardware"]
    ),
    "tutorial-conv-on-akd1000": UserModel(
        tutorial_conv, run_sequential, "sequence", refusal=("0", "padding=2")
    ),
    "pool-after-leaky": UserModel(
        pool_after_leaky, run_sequential, "sequence", flags=["--no-hardware"]
    ),
    "fc-sequential-init-hidden": UserModel(fc_sequential, run_sequential, "sequence"),
    "strided-conv-maps-on-akd1000": UserModel(strided_hardware_net, run_sequential, "sequence"),
    "class-time-loop-reset-zero": UserModel(lambda: TimeLoopFC("zero"), run_time_loop, "sequence"),
    "class-time-loop-subtract": UserModel(
        lambda: TimeLoopFC("subtract"), run_time_loop, "sequence"
    ),
    "class-batchnorm-negative-gamma": UserModel(BatchNormNet, run_per_frame),
    "class-spk-mem-spike-counts": UserModel(SpikesAndMembrane, run_spike_counts, readout="spikes"),
    "class-spk-mem-membrane-readout": UserModel(SpikesAndMembrane, run_per_frame),
    "residual": UserModel(Residual, run_per_frame, refusal=("lif2", "plain chain")),
    "average-of-spikes": UserModel(
        average_of_spikes, run_sequential, "sequence", refusal=("2", "pool before")
    ),
    "beta-nonzero": UserModel(
        leaky_with_memory, run_sequential, "sequence", refusal=("2", "beta=0")
    ),
}
