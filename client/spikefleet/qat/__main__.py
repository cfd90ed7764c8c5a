"""Fine-tune the reference network with int4 fake quantization: ``python -m spikefleet.qat``.

Starts from the shipped weights (or ``--weights``), fine-tunes on the N-DIGITS
train split with the reference training's random shifts, distilling from the
float original, keeps the epoch with the lowest loss on train samples held out
from the fine-tuning, prints float accuracy before and after, and writes an
extract bundle whose conversion reproduces the fine-tuned model spike for spike
(see ``spikefleet.qat``).
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
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-4, help="peak rate, cosine decay to 0")
    parser.add_argument(
        "--distill", type=float, default=0.7, help="weight of the float teacher (0: labels only)"
    )
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument(
        "--shift", type=int, default=2, help="random shifts of up to this many pixels (0: none)"
    )
    parser.add_argument(
        "--fixed-scales", action="store_true", help="keep the initial scales (no LSQ)"
    )
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.125,
        help="share of train samples kept out of the fine-tuning to choose the epoch",
    )
    parser.add_argument(
        "--start",
        choices=("calibrated", "weights"),
        default="calibrated",
        help="start from the converter's calibrated int4 layers (256 fine-tuning samples) or "
        "from the weights' squared-error clipping",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", type=Path, required=True, help="bundle to write")
    parser.add_argument(
        "--weights-out", type=Path, help="also save the fine-tuned weights (.safetensors)"
    )
    args = parser.parse_args(argv)

    import torch

    from spikefleet.datasets import ndigits
    from spikefleet.errors import DatasetError
    from spikefleet.qat import EpochStats, QATConfig, export, fine_tune
    from spikefleet.reference import load_reference_model
    from spikefleet.reference.model import frames_to_input
    from spikefleet.reference.train import accuracy, shifted

    torch.set_num_threads(args.threads)
    try:
        ndigits.read_index(args.root)
    except DatasetError:
        print("building N-DIGITS first ...", flush=True)
        ndigits.build(args.root)
    model = load_reference_model(args.weights)
    train, train_labels = ndigits.load_frames(args.root, "train")
    test, test_labels = ndigits.load_frames(args.root, "test")
    order = np.random.default_rng(args.seed).permutation(len(train))
    held = np.sort(order[: round(args.holdout * len(train))])
    fit = np.sort(order[len(held) :])

    def frames_of(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames_to_input(train[index].reshape(-1, *train.shape[2:]))
        return x, torch.from_numpy(np.repeat(train_labels[index], train.shape[1]))

    print(
        f"float accuracy before: test {accuracy(model, test, test_labels):.4f}, held-out train "
        f"{accuracy(model, train[held], train_labels[held]):.4f} ({len(held)} samples)",
        flush=True,
    )
    inputs, labels = frames_of(fit)
    generator = torch.Generator().manual_seed(args.seed)

    def augment(x: torch.Tensor) -> torch.Tensor:
        dy, dx = torch.randint(-args.shift, args.shift + 1, (2,), generator=generator)
        return shifted(x, int(dy), int(dx))

    def report(stats: EpochStats) -> None:
        train_loss = "-" if stats.train_loss is None else f"{stats.train_loss:.4f}"
        print(
            f"epoch {stats.epoch}/{stats.epochs} loss {train_loss} held-out loss "
            f"{stats.validation_loss:.4f} frame accuracy {stats.validation_accuracy:.4f}"
            + (" (best so far)" if stats.best else ""),
            flush=True,
        )

    config = QATConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        seed=args.seed,
        distill=args.distill,
        temperature=args.temperature,
        learn_scales=not args.fixed_scales,
    )
    fine_tune(
        model,
        inputs,
        labels,
        config,
        augment=augment if args.shift else None,
        progress=report,
        validation=frames_of(held) if len(held) else None,
        calibration=frames_of(np.sort(order[len(held) : len(held) + 256]))[0]
        if args.start == "calibrated"
        else None,
    )
    print(
        f"fine-tuned float accuracy: test {accuracy(model, test, test_labels):.4f}, held-out "
        f"train {accuracy(model, train[held], train_labels[held]):.4f}",
        flush=True,
    )
    sample = frames_to_input(train[:8].reshape(-1, *train.shape[2:]))
    export(model, sample, args.out)
    if args.weights_out is not None:
        from spikefleet.reference.weights import save_weights

        save_weights(model, args.weights_out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
