"""What int4 costs the reference network on average: K float models trained by the shipped recipe.

    python benchmarks/convert_seeds.py --data NDIGITS_ROOT --cache DIR [--seeds 5] [--json]
        [--split test|heldout] [--qat="SWITCHES"] [--against RUN.json] [--no-qat]
        [--first-seed 1] [--threads 2]

The test split has 359 samples (one sample = 0.28 point) and one float model is
one draw of its recipe: the shipped weights score 99.16%, the same recipe with
seed 1 98.61%. So this trains ``--seeds`` float ReferenceNets by the shipped
recipe (``spikefleet.reference.train``, ``TrainConfig(seed=k)``, k from
``--first-seed``) and, for each of them and for the shipped weights, scores on
the test split: the float model; int4 post-training quantization without
calibration; int4 calibrated the way ``benchmarks/convert.py`` calibrates (256
train samples, ``default_rng(0)``); and int4 after the QAT recipe session 5
chose on a clean held-out train split (``python -m spikefleet.qat --start
weights --distill 0 --schedule onecycle --lr 1e-3 --weight-decay 1e-4
--epochs 16 --holdout 0``, its bundle converted with the same calibration).
Nothing here chooses anything by the test split: the recipes are fixed.

``--split heldout`` is for choosing: each float model trains on 3/4 of the
train split only (``split``: the permutation ``default_rng(seed)`` of the QAT
CLI's ``--holdout 0.25 --seed k``), calibration and QAT use those samples only
(QAT with ``--keep-last``: the held-out quarter is never chosen on), and every
method is scored on the held-out quarter; the shipped model, which trained on
all of them, is left out. ``--qat`` scores another QAT recipe, and ``--against``
compares it sample by sample with an earlier run's (its ``--json`` output).

Reported: errors per model and method, the paired difference int4 minus float
in points with a 95% paired bootstrap interval over test samples, top-1
disagreements (and how many samples int4 lost and gained against float), and
across the seeds the mean paired difference with a two-level bootstrap
interval (seeds and test samples resampled) and a t interval over seeds. Each
trained model and each QAT result is cached under ``--cache``, keyed by its
recipe, seed and dataset, so a rerun only converts and scores. Progress goes
to stderr. Conversion times are given with their ratio to the shipped
model's, measured in the same run (the anchor).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: The QAT recipe with the lowest held-out loss in session 5 (benchmarks/RESULTS.md,
#: "Session 5: QAT recipes chosen on a clean held-out split", recipe e6 / run W0),
#: fixed before any of these runs: never chosen by the test split.
QAT_RECIPE = [
    *("--start", "weights", "--distill", "0", "--schedule", "onecycle", "--lr", "1e-3"),
    *("--weight-decay", "1e-4", "--epochs", "16", "--holdout", "0"),
]

#: Train samples the calibrated conversion uses, drawn as benchmarks/convert.py draws them.
CALIBRATION_SAMPLES = 256


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def dataset_key(root: Path | None) -> str:
    from spikefleet.datasets import ndigits

    return digest(ndigits.read_index(root))


#: The share of the train split held out per seed with ``--split heldout``: the QAT
#: CLI's ``--holdout 0.25 --seed k`` holds out the same samples.
HOLDOUT = 0.25


def split(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held) train-sample indices of seed ``seed``, as ``python -m spikefleet.qat`` splits."""
    order = np.random.default_rng(seed).permutation(samples)
    held = np.sort(order[: round(HOLDOUT * samples)])
    return np.sort(order[len(held) :]), held


def recipe_key(seed: int, data: str, held_out: bool = False) -> str:
    """The float model's cache key: the shipped recipe's settings (not threads), seed, data."""
    from spikefleet.reference.train import TrainConfig

    fields = dataclasses.asdict(TrainConfig(seed=seed))
    fields.pop("threads")
    fields.pop("seed")
    if held_out:
        return f"ref-{digest(fields, data, 'held out', HOLDOUT)}-fit-seed{seed}"
    return f"ref-{digest(fields, data)}-seed{seed}"


def float_model(
    root: Path | None, cache: Path, seed: int, threads: int, fit: np.ndarray | None = None
) -> tuple[Path, dict]:
    """The seed's float weights (trained and cached if missing) and what training reported.

    ``fit``: train on these train samples only (``split``), the others held out.
    """
    from spikefleet.reference.train import TrainConfig, train
    from spikefleet.reference.weights import save_weights

    key = recipe_key(seed, dataset_key(root), held_out=fit is not None)
    weights, info = cache / f"{key}.safetensors", cache / f"{key}.json"
    if weights.is_file() and info.is_file():
        log(f"seed {seed}: float model from the cache ({weights.name})")
        return weights, json.loads(info.read_text())
    cache.mkdir(parents=True, exist_ok=True)
    log(f"seed {seed}: training the float model (the shipped recipe) ...")
    result = train(
        root,
        TrainConfig(seed=seed, threads=threads),
        progress=lambda e, n, loss: log(f"seed {seed}: epoch {e}/{n} loss {loss:.4f}"),
        samples=fit,
    )
    partial = weights.with_suffix(".partial")
    save_weights(result.model, partial)
    partial.rename(weights)
    record = {
        "train_seconds": round(result.seconds, 1),
        "threads": threads,
        "train_accuracy": round(result.train_accuracy, 4),
    }
    info.write_text(json.dumps(record))
    return weights, record


def qat_model(
    root: Path | None,
    cache: Path,
    weights: Path,
    seed: int,
    threads: int,
    recipe: list[str] = QAT_RECIPE,
) -> tuple[Path, Path, dict]:
    """The recipe's QAT bundle and weights for ``weights`` (run and cached if missing)."""
    from spikefleet.qat.__main__ import main as qat_main

    key = f"qat-{digest(recipe, _file_digest(weights), seed)}"
    bundle, tuned, info = (cache / f"{key}{end}" for end in (".bundle", ".safetensors", ".json"))
    if bundle.is_file() and tuned.is_file() and info.is_file():
        log(f"{weights.name}: QAT result from the cache ({key})")
        return bundle, tuned, json.loads(info.read_text())
    cache.mkdir(parents=True, exist_ok=True)
    log(f"{weights.name}: QAT, {' '.join(recipe)} ...")
    argv = [*recipe, "--weights", str(weights), "--seed", str(seed), "--threads", str(threads)]
    if root is not None:
        argv += ["--root", str(root)]
    partial_bundle, partial_tuned = bundle.with_suffix(".partial"), tuned.with_suffix(".wpartial")
    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):  # the CLI's progress lines are progress here
        qat_main([*argv, "--out", str(partial_bundle), "--weights-out", str(partial_tuned)])
    record = {"qat_seconds": round(time.monotonic() - started, 1), "threads": threads}
    partial_bundle.rename(bundle)
    partial_tuned.rename(tuned)
    info.write_text(json.dumps(record))
    return bundle, tuned, record


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


#: The methods scored against each float model, and the #13 goal each is held to (points).
METHODS = {"no_calibration": 0.5, "calibrated": 0.5, "qat": 0.3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, help="N-DIGITS root (default: the dataset's)")
    parser.add_argument(
        "--cache", type=Path, required=True, help="directory of trained models (kept across runs)"
    )
    parser.add_argument("--seeds", type=int, default=5, help="float models to train and score")
    parser.add_argument("--first-seed", type=int, default=1, help="TrainConfig seed of the first")
    parser.add_argument(
        "--split",
        choices=("test", "heldout"),
        default="test",
        help="score on the test split (reported only), or train each model on 3/4 of the "
        "train split and score on the other 1/4 (what methods are chosen on)",
    )
    parser.add_argument(
        "--qat",
        default=" ".join(QAT_RECIPE),
        help='the python -m spikefleet.qat switches of the QAT recipe, as --qat="..." '
        "(default: session 5's)",
    )
    parser.add_argument("--no-qat", action="store_true", help="skip the QAT runs")
    parser.add_argument(
        "--against",
        type=Path,
        help="the --json output of a run of another QAT recipe on the same split and seeds: "
        "this run's QAT minus that one's, paired sample by sample",
    )
    parser.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap draws")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be at least 2: the interval over seeds needs two models")
    held_out = args.split == "heldout"
    other: dict[str, Any] = {}
    if args.against is not None:  # read first: a wrong file should not wait for the runs
        try:
            other = {r["model"]: r for r in json.loads(args.against.read_text())["models"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(
                f"convert_seeds: --against {args.against} is not this benchmark's --json output "
                f"({exc}): give a file written by a run with --json",
                file=sys.stderr,
            )
            return 2
    recipe = args.qat.split()
    if held_out:  # the same 1/4 held out of the fine-tuning, and never chosen on
        recipe += ["--holdout", str(HOLDOUT), "--keep-last"]
    import structlog

    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))
    import torch

    torch.set_num_threads(args.threads)
    from support.paired import counts, paired_bootstrap, t_interval

    from spikefleet.convert import ConvertOptions, convert, extract
    from spikefleet.datasets import ndigits
    from spikefleet.engine import Engine
    from spikefleet.errors import SpikefleetError
    from spikefleet.reference import load_reference_model
    from spikefleet.reference.model import frames_to_input
    from spikefleet.reference.weights import SHIPPED_WEIGHTS

    try:
        ndigits.read_index(args.data)
    except SpikefleetError as exc:
        print(f"convert_seeds: {exc}", file=sys.stderr)
        return 2
    train, train_labels = ndigits.load_frames(args.data, "train")
    test, test_labels = ndigits.load_frames(args.data, "test") if not held_out else (None, None)
    options = ConvertOptions()

    def calibration(fit: np.ndarray) -> np.ndarray:
        """benchmarks/convert.py's calibration draw, from the samples the model trained on."""
        rng = np.random.default_rng(0)
        return train[fit][rng.choice(len(fit), min(CALIBRATION_SAMPLES, len(fit)), False)]

    def float_predictions(weights: Path, frames: np.ndarray) -> np.ndarray:
        model = load_reference_model(weights)
        with torch.no_grad():
            flat = frames_to_input(frames.reshape(-1, *frames.shape[2:]))
            scores = model(flat).numpy().astype(np.float64)
        return scores.reshape(len(frames), frames.shape[1], -1).sum(1).argmax(1)

    def program_predictions(program: Any, frames: np.ndarray) -> np.ndarray:
        flat = frames.reshape(-1, *frames.shape[2:])
        out = Engine(program).run(flat).outputs.reshape(len(flat), -1).astype(np.float64)
        if program.output_scales is not None:
            out = out * program.output_scales
        return out.reshape(len(frames), frames.shape[1], -1).sum(1).argmax(1)

    def evaluate(
        name: str, seed: int, weights: Path, fit: np.ndarray, frames: np.ndarray, folder: Path
    ) -> dict[str, Any]:
        """Float, PTQ without and with calibration, and QAT predictions of one float model."""
        calib = calibration(fit)
        predictions = {"float": float_predictions(weights, frames)}
        row: dict[str, Any] = {"model": name}
        bundle = folder / f"{name}.safetensors"
        sample = frames_to_input(calib.reshape(-1, *calib.shape[2:])[:3])
        extract(load_reference_model(weights), sample, bundle)
        plain = convert(bundle, options=options).program
        predictions["no_calibration"] = program_predictions(plain, frames)
        started = time.perf_counter()
        calibrated = convert(bundle, calibration=calib, options=options).program
        row["convert_calibrated_s"] = round(time.perf_counter() - started, 3)
        predictions["calibrated"] = program_predictions(calibrated, frames)
        if not args.no_qat:
            qat_bundle, tuned, record = qat_model(
                args.data, args.cache, weights, seed, args.threads, recipe
            )
            row["qat_seconds"] = record["qat_seconds"]
            result = convert(qat_bundle, calibration=calib, options=options)
            certificate = result.report.certificate if result.report else None
            row["qat_certificate"] = bool(
                certificate and certificate["spikes_equal"] and certificate["top1_equal"]
            )
            predictions["qat"] = program_predictions(result.program, frames)
            predictions["qat_float"] = float_predictions(tuned, frames)
        row["predictions"] = predictions
        return row

    everything = np.arange(len(train))
    models: list[tuple[str, int, Path, np.ndarray, dict]] = []
    if not held_out:  # the shipped model trained on every train sample
        models.append(("shipped", 0, SHIPPED_WEIGHTS, everything, {}))
    for k in range(args.first_seed, args.first_seed + args.seeds):
        fit = split(len(train), k)[0] if held_out else everything
        weights, record = float_model(
            args.data, args.cache, k, args.threads, fit if held_out else None
        )
        models.append((f"seed{k}", k, weights, fit, record))

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, seed, weights, fit, record in models:
            if held_out:
                held = split(len(train), seed)[1]
                frames, labels = train[held], train_labels[held]
            else:
                assert test is not None and test_labels is not None
                frames, labels = test, test_labels
            row = evaluate(name, seed, weights, fit, frames, Path(folder))
            row.update(record)
            predictions = row.pop("predictions")
            baseline = predictions["float"]
            row["samples"] = len(labels)
            row["float_errors"] = int((baseline != labels).sum())
            row["float_accuracy"] = round(float((baseline == labels).mean()), 4)
            if "qat_float" in predictions:
                row["qat_float_errors"] = int((predictions.pop("qat_float") != labels).sum())
            row["methods"] = {}
            for method, goal in METHODS.items():
                if method not in predictions:
                    continue
                got = predictions[method]
                c = counts(labels, baseline, got)
                interval = paired_bootstrap(baseline == labels, got == labels, args.bootstrap)
                row["methods"][method] = {
                    **dataclasses.asdict(c),
                    "accuracy": round(float((got == labels).mean()), 4),
                    "difference_points": interval.to_dict(),
                    "within_goal": interval.mean >= -goal,
                }
            row["right"] = {m: p == labels for m, p in predictions.items()}
            rows.append(row)
            anchor = rows[0]["convert_calibrated_s"]
            summary = "  ".join(
                f"{m} {v['errors']} ({v['difference_points']['mean']:+.2f})"
                for m, v in row["methods"].items()
            )
            log(
                f"{name}: float errors {row['float_errors']} of {len(labels)}  {summary}  "
                f"convert calibrated {row['convert_calibrated_s']:.2f} s "
                f"({row['convert_calibrated_s'] / anchor:.2f}x {rows[0]['model']}'s)"
            )

    seeds = [r for r in rows if r["model"] != "shipped"]
    results: dict[str, Any] = {
        "split": args.split,
        "calibration_samples": CALIBRATION_SAMPLES,
        "qat_recipe": None if args.no_qat else " ".join(recipe),
        "seeds": [r["model"] for r in seeds],
        "float_accuracy_over_seeds": t_interval(
            np.array([100 * r["float_accuracy"] for r in seeds])
        ).to_dict(),
        "over_seeds": {},
    }
    for method, goal in METHODS.items():
        if method not in seeds[0]["right"]:
            continue
        per_seed = np.array([r["methods"][method]["difference_points"]["mean"] for r in seeds])
        # seeds and samples resampled; on test every seed is scored on the same samples,
        # held out each seed holds out its own
        two_level = paired_bootstrap(
            np.stack([r["right"]["float"] for r in seeds]),
            np.stack([r["right"][method] for r in seeds]),
            args.bootstrap,
            shared=not held_out,
        )
        results["over_seeds"][method] = {
            "goal_points": -goal,
            "difference_points": two_level.to_dict(),
            "t_interval_points": t_interval(per_seed).to_dict(),
            "per_seed_points": [round(float(v), 3) for v in per_seed],
            "mean_extra_errors": round(
                float(np.mean([r["methods"][method]["errors"] - r["float_errors"] for r in seeds])),
                2,
            ),
            "seeds_within_goal": sum(r["methods"][method]["within_goal"] for r in seeds),
            "mean_within_goal": two_level.mean >= -goal,
            "interval_within_goal": two_level.low >= -goal,
        }
    if args.against is not None and not args.no_qat:
        try:
            theirs, ours, names = [], [], []
            for row in seeds:
                them = other[row["model"]]
                if them["samples"] != row["samples"] or them["float_errors"] != row["float_errors"]:
                    raise ValueError(f"{row['model']} is another float model or sample set there")
                right = np.ones(row["samples"], bool)
                right[them["wrong"]["qat"]] = False
                theirs.append(right)
                ours.append(row["right"]["qat"])
                names.append(row["model"])
        except (ValueError, KeyError, TypeError) as exc:
            print(
                f"convert_seeds: --against {args.against}: not a run of this split and these "
                f"seeds with QAT ({exc!r}): rerun it with the same --split, --seeds and --json",
                file=sys.stderr,
            )
            return 2
        per_seed = np.array(
            [100 * (a.mean() - b.mean()) for a, b in zip(ours, theirs, strict=True)]
        )
        results["qat_against"] = {
            "run": str(args.against),
            "difference_points": paired_bootstrap(
                np.stack(theirs), np.stack(ours), args.bootstrap, shared=not held_out
            ).to_dict(),
            "t_interval_points": t_interval(per_seed).to_dict(),
            "seeds": names,
        }
    for row in rows:  # which samples each got wrong (test indices, or held-out positions)
        row["wrong"] = {m: np.flatnonzero(~r).tolist() for m, r in row.pop("right").items()}
    results["models"] = rows
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for row in rows:
            methods = "  ".join(
                f"{m} {v['accuracy']:.2%} ({v['difference_points']['mean']:+.2f} "
                f"[{v['difference_points']['low']:+.2f}, {v['difference_points']['high']:+.2f}], "
                f"disagree {v['disagreements']}, lost {v['lost']}, gained {v['gained']})"
                for m, v in row["methods"].items()
            )
            print(f"{row['model']}: float {row['float_accuracy']:.2%}  {methods}")
        for method, v in results["over_seeds"].items():
            d, t = v["difference_points"], v["t_interval_points"]
            print(
                f"over {len(seeds)} seeds, {method}: {d['mean']:+.2f} points "
                f"[{d['low']:+.2f}, {d['high']:+.2f}] (t over seeds [{t['low']:+.2f}, "
                f"{t['high']:+.2f}]), goal {v['goal_points']:+.1f}: mean "
                f"{'within' if v['mean_within_goal'] else 'outside'}, seeds within "
                f"{v['seeds_within_goal']}/{len(seeds)}"
            )
        if "qat_against" in results:
            d, t = (results["qat_against"][k] for k in ("difference_points", "t_interval_points"))
            print(
                f"QAT against {args.against}: {d['mean']:+.2f} points [{d['low']:+.2f}, "
                f"{d['high']:+.2f}] (t over seeds [{t['low']:+.2f}, {t['high']:+.2f}])"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
