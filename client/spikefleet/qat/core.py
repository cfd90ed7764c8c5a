"""Fake-quantized int4 weights and integer thresholds, as the converter makes them.

Why the program then computes what the fine-tuned model computes: with weights
``s * q`` (q integer in [-7, 7], s = max|w| / 7 per output channel) a neuron
fires when ``s * (q . x) + b > T``; for inputs that are integer counts or spikes
``q . x`` is an integer, so this holds exactly when ``q . x > floor((T - b) / s)``,
the integer threshold the converter computes. ``export`` moves each bias so that
``(T - b) / s`` sits at that integer plus one half: nothing changes in exact
arithmetic, and float rounding is half a step away from any decision. The read-
out layer's bias is rounded to whole steps, as the program carries it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from spikefleet.convert.graph import Graph
from spikefleet.errors import ConversionError

LEVELS = 7  # int4 weights in [-7, 7]: akida refuses -8


class Int4PerChannel(nn.Module):
    """Fake-quantize a weight per output channel to s * [-7..7] with a fixed scale s.

    s is chosen once, from the weights ``prepare`` finds, by the converter's own
    clipping search (squared weight error per channel); weights beyond 7 s are
    clipped, with zero gradient there (torch's straight-through estimator).
    """

    scale: torch.Tensor
    zero: torch.Tensor

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        from spikefleet.convert.quantize import choose_scales

        rows = weight.detach().double().reshape(weight.shape[0], -1).numpy()
        self.register_buffer("scale", torch.from_numpy(choose_scales(rows, 4, "mse")).float())
        self.register_buffer("zero", torch.zeros(weight.shape[0], dtype=torch.int32))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(
            weight, self.scale, self.zero, 0, -LEVELS, LEVELS
        )


class BiasOnGrid(nn.Module):
    """A bias in whole weight steps of its layer (straight-through), as the program carries
    a read-out layer's bias; for a firing layer it only moves where export centres it."""

    def __init__(self, quantizer: Int4PerChannel) -> None:
        super().__init__()
        self._quantizer = [quantizer]  # a list: not a submodule, no cycle in modules()

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        scale = self._quantizer[0].scale
        return bias + (scale * torch.round(bias / scale) - bias).detach()


def prepare(model: nn.Module) -> nn.Module:
    """Fake-quantize every Conv2d/Linear weight of ``model`` in place; returns it."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            raise ConversionError(
                "qat: fold BatchNorm into the preceding layer before quantization-aware "
                "training (the converter quantizes the folded weights)"
            )
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear) and not parametrize.is_parametrized(
            module, "weight"
        ):
            quantizer = Int4PerChannel(module.weight)
            parametrize.register_parametrization(module, "weight", quantizer)
            if module.bias is not None:
                parametrize.register_parametrization(module, "bias", BiasOnGrid(quantizer))
    return model


@dataclass(frozen=True)
class QATConfig:
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 2e-4
    seed: int = 0


def fine_tune(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    config: QATConfig | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> nn.Module:
    """Fine-tune a prepared per-frame classifier (scores = model(x)) with cross entropy."""
    config = config or QATConfig()
    prepare(model)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            x = inputs[batch]
            if augment is not None:
                x = augment(x)
            loss = loss_fn(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        if progress is not None:
            progress(epoch + 1, config.epochs, total / len(inputs))
    return model.eval()


def export(
    model: nn.Module,
    sample: torch.Tensor,
    path: str | os.PathLike[str] | None = None,
    **extract_options: Any,
) -> Graph:
    """Bake the int4 weights into ``model`` (in place), centre its thresholds, extract it.

    ``sample`` goes to :func:`spikefleet.extract` (the converter checks its
    reading against the model on it); give calibration frames to cover them.
    """
    from spikefleet.convert.compat import lower
    from spikefleet.convert.extraction import extract
    from spikefleet.convert.quantize import on_grid

    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear) and parametrize.is_parametrized(
            module, "weight"
        ):
            if parametrize.is_parametrized(module, "bias"):
                parametrize.remove_parametrizations(module, "bias", leave_parametrized=True)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    graph = extract(model, sample, **extract_options)
    stages = lower(graph).stages
    modules = dict(model.named_modules())
    with torch.no_grad():
        for stage in stages:
            module = modules[stage.name]
            assert isinstance(module, nn.Conv2d | nn.Linear)
            weight = module.weight.detach().double().reshape(module.weight.shape[0], -1)
            scale = on_grid(weight.numpy(), 4)
            if scale is None:
                raise ConversionError(f"qat: {stage.name} was not prepared (qat.prepare)")
            bias = (
                np.zeros(len(scale))
                if module.bias is None
                else module.bias.detach().double().numpy()
            )
            if stage.spike is not None:
                area = 1
                if stage.pool == "gap":
                    from spikefleet.convert.quantize import pre_pool_shape

                    _, h, w = pre_pool_shape(stage)
                    area = h * w
                threshold = stage.threshold
                steps = np.floor(area * (threshold - bias) / scale + 1e-9)
                centred = threshold - scale * (steps + 0.5) / area
            else:
                centred = scale * np.rint(bias / scale)
            if module.bias is None:
                module.bias = nn.Parameter(torch.zeros(len(scale)))
            module.bias.copy_(torch.from_numpy(centred).to(module.bias.dtype))
    return extract(model, sample, path, **extract_options)
