"""PTQ on a held-out fully connected SNN: float SNNTorch vs the int4 program, N-DIGITS.

    python benchmarks/convert_fc.py --data NDIGITS_ROOT

Trains Flatten -> Linear(2312, 128) -> Leaky -> Linear(128, 10) -> Leaky (beta=0,
read out as membrane) for 4 epochs on the train split's frames (seed 0), then
converts it with the defaults, without and with 256 train-split calibration
samples, and scores float and int4 on the test split (sample = its 3 frames).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, help="N-DIGITS root")
    args = parser.parse_args(argv)
    import snntorch as snn
    import torch
    from torch import nn

    from spikefleet.convert import ConvertOptions, convert, extract
    from spikefleet.datasets import ndigits
    from spikefleet.engine import Engine
    from spikefleet.reference.model import frames_to_input

    torch.set_num_threads(2)
    torch.manual_seed(0)
    test, test_labels = ndigits.load_frames(args.data, "test")
    train, train_labels = ndigits.load_frames(args.data, "train")

    class FC(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(2312, 128)
            self.lif1 = snn.Leaky(beta=0.0)
            self.fc2 = nn.Linear(128, 10)
            self.lif2 = snn.Leaky(beta=0.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            cur = self.fc1(x.flatten(1))
            spk, _ = self.lif1(cur, torch.zeros_like(cur))
            cur = self.fc2(spk)
            _, mem = self.lif2(cur, torch.zeros_like(cur))
            return mem

    net = FC()
    inputs = frames_to_input(train.reshape(-1, 34, 34, 2))
    targets = torch.from_numpy(np.repeat(train_labels, 3))
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(4):
        order = torch.randperm(len(inputs))
        for start in range(0, len(inputs), 64):
            batch = order[start : start + 64]
            loss = nn.functional.cross_entropy(net(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    flat = test.reshape(-1, 34, 34, 2)
    with torch.no_grad():
        scores = net(frames_to_input(flat)).numpy()
    results: dict[str, object] = {
        "float_accuracy": round(
            float((scores.reshape(len(test), 3, -1).sum(1).argmax(1) == test_labels).mean()), 4
        )
    }
    calib = train[np.random.default_rng(0).choice(len(train), 256, replace=False)]
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "fc.bundle"
        extract(net, frames_to_input(flat[:3]), bundle)
        for name, data in (("no_calibration", None), ("calibration_256", calib)):
            started = time.perf_counter()
            program = convert(
                bundle, calibration=data, options=ConvertOptions(hardware=False)
            ).program
            seconds = time.perf_counter() - started
            out = Engine(program).run(flat).outputs.reshape(len(flat), -1).astype(np.float64)
            if program.output_scales is not None:
                out = out * program.output_scales
            predicted = out.reshape(len(test), 3, -1).sum(1).argmax(1)
            results[f"int4_accuracy_{name}"] = round(float((predicted == test_labels).mean()), 4)
            results[f"convert_{name}_s"] = round(seconds, 3)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
