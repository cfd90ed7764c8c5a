"""Fine-tune the reference network with int4 fake quantization: ``python -m spikefleet.qat``.

Starts from the shipped weights (or ``--weights``), fine-tunes on the N-DIGITS
train split with the reference training's random shifts, prints float accuracy
of the fine-tuned model on the test split, and writes an extract bundle whose
conversion reproduces it spike for spike (see ``spikefleet.qat``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spikefleet.qat", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--root", type=Path, help="N-DIGITS directory (built if missing)")
    parser.add_argument("--weights", type=Path, help="ReferenceNet weights (default: shipped)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="bundle to write")
    parser.add_argument(
        "--weights-out", type=Path, help="also save the fine-tuned weights (.safetensors)"
    )
    args = parser.parse_args(argv)

    import torch

    from spikefleet.datasets import ndigits
    from spikefleet.errors import DatasetError
    from spikefleet.qat import QATConfig, export, fine_tune
    from spikefleet.reference import load_reference_model
    from spikefleet.reference.model import frames_to_input
    from spikefleet.reference.train import accuracy, shifted

    try:
        ndigits.read_index(args.root)
    except DatasetError:
        print("building N-DIGITS first ...", flush=True)
        ndigits.build(args.root)
    model = load_reference_model(args.weights)
    train, train_labels = ndigits.load_frames(args.root, "train")
    test, test_labels = ndigits.load_frames(args.root, "test")
    print(f"float accuracy before: {accuracy(model, test, test_labels):.4f}", flush=True)
    inputs = frames_to_input(train.reshape(-1, *train.shape[2:]))
    labels = torch.from_numpy(np.repeat(train_labels, train.shape[1]))
    generator = torch.Generator().manual_seed(args.seed)

    def augment(x: torch.Tensor) -> torch.Tensor:
        dy, dx = torch.randint(-2, 3, (2,), generator=generator)
        return shifted(x, int(dy), int(dx))

    fine_tune(
        model,
        inputs,
        labels,
        QATConfig(epochs=args.epochs, learning_rate=args.lr, seed=args.seed),
        augment=augment,
        progress=lambda e, n, loss: print(f"epoch {e}/{n} loss {loss:.4f}", flush=True),
    )
    print(f"fine-tuned float accuracy: {accuracy(model, test, test_labels):.4f}", flush=True)
    sample = frames_to_input(train[:8].reshape(-1, *train.shape[2:]))
    export(model, sample, args.out)
    if args.weights_out is not None:
        from spikefleet.reference.weights import save_weights

        save_weights(model, args.weights_out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
