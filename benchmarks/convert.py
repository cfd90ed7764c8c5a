"""Conversion benchmark: the reference network on N-DIGITS, float SNNTorch vs int4 program.

    python benchmarks/convert.py [--weights W.safetensors] [--data NDIGITS_ROOT] [--json]

Measures, on the N-DIGITS test split: float accuracy (SNNTorch, torch CPU), int4
accuracy (the converted program on spikefleet.engine.Engine), top-1 agreement,
and conversion time (excluding the torch import). Also converts the same model
by all four input paths (extract bundle, state_dict + --arch, the seed's numpy
directory, a NIR graph) and checks the programs are byte-identical apart from
provenance. Clipping is calibrated on train-split frames, never on the test set.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# The reference network (spikefleet.reference.model): conv1 padded as Akida's 'same'
# pads a 34-pixel input at stride 2 (0 before, 1 after); conv2's 9x9 map flattened.
ARCH = "Input(34,34,2) Pad(0,1,0,1) Conv(32,3,s2,p0) Leaky Conv(64,3,s2) Leaky FC(10) Leaky"


def load_model(weights: Path | None) -> Any:
    from spikefleet.reference import load_reference_model

    return load_reference_model(weights)


def seed_numpy_dir(model: Any, directory: Path) -> None:
    """The seed document's extraction script, extended to Conv2d as its N-MNIST example needs."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            np.save(directory / f"{name}_weight.npy", module.weight.detach().numpy())
            if module.bias is not None:
                np.save(directory / f"{name}_bias.npy", module.bias.detach().numpy())
        elif type(module).__name__ == "Leaky":
            (directory / f"{name}_threshold.txt").write_text(str(float(module.threshold)))


def nir_graph(model: Any) -> Any:
    import nir

    def arr(tensor: Any) -> np.ndarray:
        return tensor.detach().numpy().astype(np.float64)

    def lif(shape: tuple[int, ...]) -> Any:
        dt = 1e-4  # SNNTorch's export: tau = dt/(1-beta), r = tau/dt
        return nir.LIF(
            tau=np.full(shape, dt),
            r=np.ones(shape),
            v_leak=np.zeros(shape),
            v_threshold=np.ones(shape),
        )

    def conv(layer: Any, size: int) -> Any:
        return nir.Conv2d(
            input_shape=(size, size),
            weight=arr(layer.weight),
            stride=layer.stride[0],
            padding=1,  # NIR has no asymmetric padding: conv1's (0,1,0,1) becomes 1
            dilation=1,
            groups=1,
            bias=arr(layer.bias),
        )

    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([2, 34, 34])}),
            "conv1": conv(model.conv1, 34),
            "lif1": lif((32, 17, 17)),
            "conv2": conv(model.conv2, 17),
            "lif2": lif((64, 9, 9)),
            "flat": nir.Flatten(input_type={"input": np.array([64, 9, 9])}, start_dim=0),
            "fc1": nir.Affine(weight=arr(model.fc1.weight), bias=arr(model.fc1.bias)),
            "lif3": lif((10,)),
            "output": nir.Output(output_type={"output": np.array([10])}),
        },
        edges=[
            ("input", "conv1"),
            ("conv1", "lif1"),
            ("lif1", "conv2"),
            ("conv2", "lif2"),
            ("lif2", "flat"),
            ("flat", "fc1"),
            ("fc1", "lif3"),
            ("lif3", "output"),
        ],
        type_check=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="ReferenceNet state_dict (.safetensors)")
    parser.add_argument("--data", type=Path, help="N-DIGITS root (default: the dataset's)")
    parser.add_argument("--calib", type=int, default=256, help="train samples for clipping")
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed conversions with calibration (warm process)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import structlog

    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))

    started = time.perf_counter()
    import torch

    torch_import = time.perf_counter() - started
    torch.set_num_threads(2)
    import nir

    from spikefleet.convert import ConvertOptions, convert, extract
    from spikefleet.datasets import ndigits
    from spikefleet.engine import Engine
    from spikefleet.program.codec import encode
    from spikefleet.program.model import Provenance
    from spikefleet.reference.model import frames_to_input

    model = load_model(args.weights)
    test_frames, test_labels = ndigits.load_frames(args.data, "test")
    train_frames, _ = ndigits.load_frames(args.data, "train")
    rng = np.random.default_rng(0)
    calib = train_frames[rng.choice(len(train_frames), min(args.calib, len(train_frames)), False)]

    # A sample is one or more frames (N-DIGITS: one per saccade); its class is
    # the argmax of the outputs summed over its frames, for both models.
    if test_frames.ndim == 4:
        test_frames = test_frames[:, None]
        calib = calib[:, None] if calib.ndim == 4 else calib
    per_sample = test_frames.shape[1]
    flat = test_frames.reshape(-1, *test_frames.shape[2:])
    with torch.no_grad():
        scores = model(frames_to_input(flat)).numpy()
    float_pred = scores.reshape(len(test_frames), per_sample, -1).sum(1).argmax(1)
    float_acc = float((float_pred == test_labels).mean())

    results: dict[str, Any] = {"torch_import_s": round(torch_import, 3)}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        t = time.perf_counter()
        extract(model, frames_to_input(flat[:per_sample]), root / "ref.safetensors")
        results["extract_s"] = round(time.perf_counter() - t, 3)
        torch.save(model.state_dict(), root / "ref.pt")
        seed_numpy_dir(model, root / "numpy")
        nir.write(root / "ref.nir", nir_graph(model))

        options = ConvertOptions()
        t = time.perf_counter()
        plain = convert(root / "ref.safetensors", options=options).program
        results["convert_no_calibration_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        result = convert(root / "ref.safetensors", calibration=calib, options=options)
        results["convert_with_calibration_s"] = round(time.perf_counter() - t, 3)
        results["calibration_samples"] = len(calib)
        warm = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            convert(root / "ref.safetensors", calibration=calib, options=options)
            warm.append(round(time.perf_counter() - t, 3))
        results["convert_with_calibration_warm_s"] = warm
        results["notes"] = result.notes

        def bare(program: Any) -> bytes:
            program.provenance = Provenance()
            program.name = "reference"
            return encode(program)

        quick = ConvertOptions(hardware=False)
        # NIR pads symmetrically: its padding=1 conv1 needs allow_shift to land on
        # Akida's 'same', the windows the other paths' exact (0,1,0,1) padding gives.
        nir_options = ConvertOptions(allow_shift=True, hardware=False)
        programs = {
            "bundle": bare(convert(root / "ref.safetensors", options=quick).program),
            "state_dict": bare(convert(root / "ref.pt", arch=ARCH, options=quick).program),
            "numpy_dir": bare(convert(root / "numpy", arch=ARCH, options=quick).program),
            "nir": bare(convert(root / "ref.nir", options=nir_options).program),
        }
        first = programs["bundle"]
        results["four_paths_identical"] = all(data == first for data in programs.values())

    def predictions(program: Any) -> np.ndarray:
        outputs = Engine(program).run(flat).outputs.reshape(len(flat), -1).astype(np.float64)
        if program.output_scales is not None:
            outputs = outputs * program.output_scales
        return outputs.reshape(len(test_frames), per_sample, -1).sum(1).argmax(1)

    int_pred = predictions(result.program)
    results.update(
        test_samples=len(test_labels),
        float_accuracy=round(float_acc, 4),
        int4_accuracy=round(float((int_pred == test_labels).mean()), 4),
        int4_accuracy_no_calibration=round(float((predictions(plain) == test_labels).mean()), 4),
        top1_agreement=round(float((int_pred == float_pred).mean()), 4),
        akd1000_nps=result.program.hardware.np_count if result.program.hardware else None,
        certificate=result.report.certificate if result.report else None,
        calibration_report=result.report.to_dict() if result.report else None,
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
