"""Train the reference network on N-DIGITS: ``python -m spikefleet.reference.train``.

Float training on the CPU with a fixed seed, in a couple of minutes on 2 cores.
Robustness for the 4-bit converter comes from the surrogate gradient (atan),
weight decay and a one-cycle learning-rate schedule. Every frame of a sample
(see ``ndigits.sample_frames``) is a training example with the sample's label.
With 1,438 training recordings the network fits the train split exactly within
a few epochs; small random shifts of each batch (``shift``) and dropout on the
flattened conv2 spikes keep it from memorising pixel positions.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spikefleet.datasets import ndigits
from spikefleet.errors import DatasetError
from spikefleet.reference.model import ReferenceNet, frames_to_input


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 16
    batch_size: int = 32
    learning_rate: float = 5e-3
    weight_decay: float = 1e-4
    shift: int = 2
    dropout: float = 0.0
    threads: int = 2


@dataclass
class TrainResult:
    model: ReferenceNet
    train_accuracy: float
    test_accuracy: float
    seconds: float


def accuracy(model: ReferenceNet, frames: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the float model on samples' frames (S, n, 34, 34, 2).

    A sample's scores are summed over its frames, as ``ndigits.predict_sample`` does.
    """
    model.eval()
    count = frames.shape[1]
    with torch.no_grad():
        scores = model(frames_to_input(frames.reshape(-1, *frames.shape[2:])))
    summed = scores.reshape(-1, count, scores.shape[-1]).sum(1)
    return float((summed.argmax(1).numpy() == labels).mean())


def shifted(batch: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``batch`` (B, C, H, W) moved by (dy, dx) pixels: what leaves is lost, zeros enter."""
    h, w = batch.shape[-2:]
    padded = nn.functional.pad(batch, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + h, left : left + w]


def train(
    root: str | os.PathLike[str] | None = None,
    config: TrainConfig | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    samples: np.ndarray | None = None,
) -> TrainResult:
    """Train on the N-DIGITS train split at ``root``; report train and test accuracy.

    ``progress(epoch, epochs, loss)`` is called after each epoch. ``samples``
    (indices into the train split, default all) trains on those samples only,
    so that the others stay held out from the model (experiments that choose
    a method on train data, never on test); the train accuracy is theirs.
    """
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    train_frames, train_labels = ndigits.load_frames(root, "train")
    if samples is not None:
        samples = np.asarray(samples)
        if samples.ndim != 1 or not len(samples) or samples.dtype.kind not in "iu":
            raise DatasetError("train: samples must be a non-empty 1-D array of sample indices")
        if samples.min() < 0 or samples.max() >= len(train_labels):
            raise DatasetError(
                f"train: sample index out of range: the train split has {len(train_labels)} "
                f"samples, give indices 0-{len(train_labels) - 1}"
            )
        train_frames, train_labels = train_frames[samples], train_labels[samples]
    test_frames, test_labels = ndigits.load_frames(root, "test")
    inputs = frames_to_input(train_frames.reshape(-1, *train_frames.shape[2:]))
    targets = torch.from_numpy(np.repeat(train_labels, train_frames.shape[1]))

    started = time.monotonic()
    model = ReferenceNet(dropout=config.dropout)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps = config.epochs * -(-len(inputs) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.learning_rate, total_steps=steps
    )
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            x = inputs[batch]
            if config.shift:
                dy, dx = torch.randint(-config.shift, config.shift + 1, (2,), generator=generator)
                x = shifted(x, int(dy), int(dx))
            loss = loss_fn(model(x), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        if progress is not None:
            progress(epoch + 1, config.epochs, total / len(inputs))
    return TrainResult(
        model=model,
        train_accuracy=accuracy(model, train_frames, train_labels),
        test_accuracy=accuracy(model, test_frames, test_labels),
        seconds=time.monotonic() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spikefleet.reference.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", type=Path, help="N-DIGITS directory (built if missing)")
    parser.add_argument("--out", type=Path, help="write the weights here (.safetensors)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument(
        "--shift", type=int, default=TrainConfig.shift, help="max random shift in pixels"
    )
    parser.add_argument("--dropout", type=float, default=TrainConfig.dropout)
    args = parser.parse_args(argv)
    config = TrainConfig(epochs=args.epochs, seed=args.seed, shift=args.shift, dropout=args.dropout)
    try:
        ndigits.read_index(args.root)
    except DatasetError:
        print("building N-DIGITS first ...", flush=True)
        ndigits.build(args.root)
    result = train(
        args.root,
        config,
        progress=lambda e, n, loss: print(f"epoch {e}/{n} loss {loss:.4f}", flush=True),
    )
    print(
        f"train accuracy {result.train_accuracy:.4f}  test accuracy {result.test_accuracy:.4f}  "
        f"({result.seconds:.0f} s)"
    )
    if args.out is not None:
        from spikefleet.reference.weights import save_weights

        save_weights(result.model, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
