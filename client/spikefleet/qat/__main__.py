"""Fine-tune the reference network with int4 fake quantization: ``python -m spikefleet.qat``.

Starts from the shipped weights (or ``--weights``; ``--start scratch`` trains a
fresh network, the weights then only teach), fine-tunes on the N-DIGITS train
split with the reference training's random shifts, keeps the epoch with the
lowest loss on train samples held out from the fine-tuning (``--holdout 0``:
none held out; ``--keep-last``: held out but only measured; the last epoch is
kept either way), prints the held-out accuracy before
and after, and writes an extract bundle whose conversion reproduces the
fine-tuned model spike for spike (see ``spikefleet.qat``). It never reads the
test split: that is for the reported figure (``benchmarks/convert.py``), not
for choosing.
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
        "--keep-last",
        action="store_true",
        help="keep the last epoch even with a held-out set (which is then only measured, "
        "never chosen on: for experiments that score methods on it)",
    )
    parser.add_argument(
        "--start",
        choices=("calibrated", "weights", "scratch"),
        default="calibrated",
        help="start from the converter's calibrated int4 layers (on --calib-samples of the "
        "fine-tuning samples), "
        "from the weights' squared-error clipping, or from a fresh ReferenceNet (QAT through "
        "a whole training run; the float weights are then only the distillation teacher)",
    )
    parser.add_argument(
        "--calib-samples",
        type=int,
        default=256,
        help="fine-tuning samples the calibrated start is calibrated on (0: all of them)",
    )
    parser.add_argument(
        "--schedule",
        choices=("cosine", "onecycle"),
        default="cosine",
        help="cosine decay from --lr, or one-cycle up to --lr (the reference training's)",
    )
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's (SGD: L2)")
    parser.add_argument(
        "--scale-lr", type=float, help="rate of the learned log-steps (default 10 x --lr)"
    )
    parser.add_argument(
        "--sample-loss",
        action="store_true",
        help="loss on each sample's summed scores over its frames (the decision that is "
        "scored) rather than on each frame",
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
    model = original = load_reference_model(args.weights)
    teacher = None
    if args.start == "scratch":
        from spikefleet.qat.core import _float_teacher
        from spikefleet.reference import ReferenceNet

        teacher = _float_teacher(model)
        torch.manual_seed(args.seed)
        model = ReferenceNet()
    train, train_labels = ndigits.load_frames(args.root, "train")
    order = np.random.default_rng(args.seed).permutation(len(train))
    held = np.sort(order[: round(args.holdout * len(train))])
    fit_order = order[len(held) :]
    fit = np.sort(fit_order)

    def frames_of(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames_to_input(train[index].reshape(-1, *train.shape[2:]))
        return x, torch.from_numpy(np.repeat(train_labels[index], train.shape[1]))

    if len(held):
        print(
            f"float accuracy on the {len(held)} held-out train samples before: "
            f"{accuracy(original, train[held], train_labels[held]):.4f}",
            flush=True,
        )
    inputs, labels = frames_of(fit)
    generator = torch.Generator().manual_seed(args.seed)

    def augment(x: torch.Tensor) -> torch.Tensor:
        dy, dx = torch.randint(-args.shift, args.shift + 1, (2,), generator=generator)
        return shifted(x, int(dy), int(dx))

    def report(stats: EpochStats) -> None:
        train_loss = "-" if stats.train_loss is None else f"{stats.train_loss:.4f}"
        held_out = (
            ""
            if stats.validation_loss is None
            else f" held-out loss {stats.validation_loss:.4f} accuracy "
            f"{stats.validation_accuracy:.4f}" + (" (best so far)" if stats.best else "")
        )
        print(f"epoch {stats.epoch}/{stats.epochs} loss {train_loss}{held_out}", flush=True)

    config = QATConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        seed=args.seed,
        distill=args.distill,
        temperature=args.temperature,
        learn_scales=not args.fixed_scales,
        scale_learning_rate=args.scale_lr,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        frames_per_sample=train.shape[1] if args.sample_loss else 1,
    )
    fine_tune(
        model,
        inputs,
        labels,
        config,
        augment=augment if args.shift else None,
        progress=report,
        teacher=teacher,
        validation=frames_of(held) if len(held) and not args.keep_last else None,
        calibration=frames_of(np.sort(fit_order[: args.calib_samples or len(fit_order)]))[0]
        if args.start == "calibrated"
        else None,
    )
    if len(held):
        print(
            f"fine-tuned accuracy on the held-out train samples: "
            f"{accuracy(model, train[held], train_labels[held]):.4f}",
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
