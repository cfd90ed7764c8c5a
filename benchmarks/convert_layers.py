"""Where int4 loses accuracy on the reference network: one layer quantized at a time.

    python benchmarks/convert_layers.py --data NDIGITS_ROOT [--weights W.safetensors] [--json]

Ablation: each weighted layer alone (the others kept float), then all of them,
has its weights rounded to int4 per output channel with the converter's scale
rules (``max``: the largest |w| maps to 7; ``mse``: the weights' squared error).
Thresholds and biases stay exact (the converter's integer thresholds are exact
for integer potentials), so what is measured is the weights' rounding alone.
Then the converted programs themselves (``convert`` with and without
calibration, per clip rule) run on the engine.

Everything is scored on two sets the calibration never sees: the train-split
samples outside the calibration draw (256 samples, ``default_rng(0)`` as in
benchmarks/convert.py), and the test split. Reported: accuracy, top-1 agreement
with the float model, and per spiking layer the share of spike decisions that
differ from the float model's (flips), of which the layer's own (with the
float model's inputs) and the ones it inherits.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

LAYERS = ("conv1", "conv2", "fc1")


def fake_int4(weight: Any, method: str) -> Any:
    """``weight`` rounded to the converter's int4 grid (per output channel), as float."""
    import torch

    from spikefleet.convert.quantize import choose_scales

    rows = weight.detach().double().reshape(weight.shape[0], -1).numpy()
    scales = choose_scales(rows, 4, method)  # type: ignore[arg-type]
    q = np.clip(np.rint(rows / scales[:, None]), -7, 7) * scales[:, None]
    return torch.from_numpy(q.reshape(weight.shape)).to(weight.dtype)


def run(model: Any, frames: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(scores summed per sample (S, 10), [lif1 spikes, lif2 spikes] per frame) of ``model``."""
    import torch

    from spikefleet.reference.model import frames_to_input

    flat = frames.reshape(-1, *frames.shape[2:])
    scores, spk1, spk2 = [], [], []
    with torch.no_grad():
        for start in range(0, len(flat), 1024):
            a, b, c = model.forward_spikes(frames_to_input(flat[start : start + 1024]))
            spk1.append(a.bool().numpy())
            spk2.append(b.bool().numpy())
            scores.append(c.numpy())
    summed = np.concatenate(scores).reshape(len(frames), frames.shape[1], -1).sum(1)
    return summed, [np.concatenate(spk1), np.concatenate(spk2)]


def own_flips(model: Any, base: Any, frames: np.ndarray, name: str) -> float | None:
    """Flips of spiking layer ``name`` with the float model's inputs to it."""
    import torch

    from spikefleet.reference.model import frames_to_input

    if name == "fc1":
        return None
    flat = frames.reshape(-1, *frames.shape[2:])
    flips = total = 0
    with torch.no_grad():
        for start in range(0, len(flat), 1024):
            x = frames_to_input(flat[start : start + 1024])
            float_spk1, _, _ = base.forward_spikes(x)
            if name == "conv1":
                a = model.conv1(model.pad1(x)) > model.lif1.threshold
                b = base.conv1(base.pad1(x)) > base.lif1.threshold
            else:
                a = model.conv2(float_spk1) > model.lif2.threshold
                b = base.conv2(float_spk1) > base.lif2.threshold
            flips += int((a != b).sum())
            total += a.numel()
    return flips / total


def score(
    scores: np.ndarray,
    spikes: list[np.ndarray],
    base: tuple[np.ndarray, list[np.ndarray]],
    labels: np.ndarray,
) -> dict[str, Any]:
    base_scores, base_spikes = base
    return {
        "accuracy": round(float((scores.argmax(1) == labels).mean()), 4),
        "agreement": round(float((scores.argmax(1) == base_scores.argmax(1)).mean()), 4),
        "errors": int((scores.argmax(1) != labels).sum()),
        "flips_lif1": round(float((spikes[0] != base_spikes[0]).mean()), 5),
        "flips_lif2": round(float((spikes[1] != base_spikes[1]).mean()), 5),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="ReferenceNet state_dict (.safetensors)")
    parser.add_argument("--data", type=Path, help="N-DIGITS root (default: the dataset's)")
    parser.add_argument("--calib", type=int, default=256, help="train samples for calibration")
    parser.add_argument("--no-programs", action="store_true", help="only the ablation")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import structlog

    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))
    import torch

    torch.set_num_threads(2)
    from spikefleet.datasets import ndigits
    from spikefleet.reference import load_reference_model

    model = load_reference_model(args.weights)
    train_frames, train_labels = ndigits.load_frames(args.data, "train")
    test_frames, test_labels = ndigits.load_frames(args.data, "test")
    pick = np.random.default_rng(0).choice(len(train_frames), args.calib, False)
    held = np.setdiff1d(np.arange(len(train_frames)), pick)
    sets = {
        "held_out_train": (train_frames[held], train_labels[held]),
        "test": (test_frames, test_labels),
    }
    base = {name: run(model, frames) for name, (frames, _) in sets.items()}
    results: dict[str, Any] = {
        "sets": {name: len(labels) for name, (_, labels) in sets.items()},
        "float": {
            name: score(*base[name], base[name], labels) for name, (_, labels) in sets.items()
        },
        "ablation": {},
        "programs": {},
    }
    for method in ("max", "mse"):
        for layer in (*LAYERS, "all"):
            variant = copy.deepcopy(model)
            for name in LAYERS if layer == "all" else (layer,):
                module = getattr(variant, name)
                with torch.no_grad():
                    module.weight.copy_(fake_int4(module.weight, method))
            row: dict[str, Any] = {}
            for name, (frames, labels) in sets.items():
                row[name] = score(*run(variant, frames), base[name], labels)
                if layer != "all":
                    own = own_flips(variant, model, frames, layer)
                    if own is not None:
                        row[name]["own_flips"] = round(own, 5)
            results["ablation"][f"{layer} {method}"] = row

    if not args.no_programs:
        import tempfile

        from spikefleet.convert import ConvertOptions, convert, extract
        from spikefleet.engine import Engine
        from spikefleet.reference.model import frames_to_input

        def program_scores(program: Any, frames: np.ndarray) -> np.ndarray:
            flat = frames.reshape(-1, *frames.shape[2:])
            out = Engine(program).run(flat).outputs.reshape(len(flat), -1).astype(np.float64)
            if program.output_scales is not None:
                out = out * program.output_scales
            return out.reshape(len(frames), frames.shape[1], -1).sum(1)

        with tempfile.TemporaryDirectory() as folder:
            bundle = Path(folder) / "ref.safetensors"
            flat_train = train_frames.reshape(-1, *train_frames.shape[2:])
            extract(model, frames_to_input(flat_train[:3]), bundle)
            for clip in ("auto", "max", "mse"):
                for calibrated in (False, True):
                    options = ConvertOptions(clip=clip, hardware=False)  # type: ignore[arg-type]
                    started = time.perf_counter()
                    result = convert(
                        bundle,
                        calibration=train_frames[pick] if calibrated else None,
                        options=options,
                    )
                    row = {"seconds": round(time.perf_counter() - started, 3)}
                    for name, (frames, labels) in sets.items():
                        got = program_scores(result.program, frames)
                        base_scores = base[name][0]
                        row[name] = {
                            "accuracy": round(float((got.argmax(1) == labels).mean()), 4),
                            "agreement": round(
                                float((got.argmax(1) == base_scores.argmax(1)).mean()), 4
                            ),
                            "errors": int((got.argmax(1) != labels).sum()),
                        }
                    label = f"{clip} {'calibrated' if calibrated else 'no calibration'}"
                    results["programs"][label] = row
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"samples: {results['sets']}")
        for section in ("float", "ablation", "programs"):
            print(f"== {section}")
            rows = {"float": results["float"]} if section == "float" else results[section]
            for label, row in rows.items():
                cells = []
                for name in sets:
                    r = row[name]
                    cell = (
                        f"{name}: acc {100 * r['accuracy']:.2f}% agree {100 * r['agreement']:.2f}%"
                    )
                    if "flips_lif1" in r:
                        cell += f" flips {100 * r['flips_lif1']:.3f}/{100 * r['flips_lif2']:.3f}%"
                    if "own_flips" in r:
                        cell += f" (own {100 * r['own_flips']:.3f}%)"
                    cells.append(cell)
                extra = f" [{row['seconds']} s]" if "seconds" in row else ""
                print(f"{label:24s} " + " | ".join(cells) + extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
