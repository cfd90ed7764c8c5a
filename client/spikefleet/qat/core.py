"""Fake-quantized int4 weights and integer thresholds, as the converter makes them.

Why the program then computes what the fine-tuned model computes: with weights
``s * q`` (q integer in [-7, 7], s the step of its output channel) a neuron
fires when ``s * (q . x) + b > T``; for inputs that are integer counts or spikes
``q . x`` is an integer, so this holds exactly when ``q . x > floor((T - b) / s)``,
the integer threshold the converter computes. ``export`` moves each bias so that
``(T - b) / s`` sits at that integer plus one half: nothing changes in exact
arithmetic, and float rounding is half a step away from any decision. The read-
out layer's bias is rounded to whole steps, as the program carries it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from spikefleet.convert.graph import Graph
from spikefleet.errors import ConversionError

LEVELS = 7  # int4 weights in [-7, 7]: akida refuses -8


class Int4PerChannel(nn.Module):
    """Fake-quantize a weight per output channel to s * [-7..7].

    s starts from the converter's own clipping search (squared weight error per
    channel). Fixed (``learn_scale=False``), torch's
    ``fake_quantize_per_channel_affine`` does the rounding with its
    straight-through gradient. Learned, s is trained by LSQ's rule (Esser et
    al., 2020: the gradient of s * round(clamp(w / s, -7, 7)) through the
    rounding), kept as log s so that an optimizer step moves it by a share of
    itself whatever the layer's weight magnitude: each channel finds the
    clipping point that suits the loss rather than the weights' squared error.
    Either way the forward value is exactly s * q with q an integer in [-7, 7],
    the grid the converter reads back (``quantize.on_grid``).
    """

    zero: torch.Tensor
    fixed_scale: torch.Tensor

    def __init__(
        self, weight: torch.Tensor, learn_scale: bool = False, scale: np.ndarray | None = None
    ) -> None:
        super().__init__()
        from spikefleet.convert.quantize import choose_scales

        rows = weight.detach().double().reshape(weight.shape[0], -1).numpy()
        chosen = choose_scales(rows, 4, "mse") if scale is None else scale
        initial = torch.from_numpy(np.asarray(chosen, dtype=np.float64)).float()
        self.learn_scale = learn_scale
        if learn_scale:
            self.log_scale = nn.Parameter(initial.log())
        else:
            self.register_buffer("fixed_scale", initial)
        self.register_buffer("zero", torch.zeros(weight.shape[0], dtype=torch.int32))

    @property
    def scale(self) -> torch.Tensor:
        """The per-channel step s (with gradient when learned)."""
        if self.learn_scale:
            return self.log_scale.exp()
        return self.fixed_scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.learn_scale:
            return torch.fake_quantize_per_channel_affine(
                weight, self.fixed_scale, self.zero, 0, -LEVELS, LEVELS
            )
        scale = self.scale.reshape(-1, *([1] * (weight.dim() - 1)))
        ratio = torch.clamp(weight / scale, -LEVELS, LEVELS)
        steps = torch.round(ratio).detach() + (ratio - ratio.detach())  # exact integers forward
        return steps * scale


class BiasOnGrid(nn.Module):
    """A bias in whole weight steps of its layer (straight-through), as the program carries
    the read-out layer's bias (on always-on inputs). Only the read-out gets it: a firing
    layer's bias folds into its integer threshold exactly, and rounding it would move
    that threshold by up to a step."""

    def __init__(self, quantizer: Int4PerChannel) -> None:
        super().__init__()
        self._quantizer = [quantizer]  # a list: not a submodule, no cycle in modules()

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        scale = self._quantizer[0].scale.detach()
        return bias + (scale * torch.round(bias / scale) - bias).detach()


def prepare(
    model: nn.Module, learn_scales: bool = False, calibration: torch.Tensor | None = None
) -> nn.Module:
    """Fake-quantize every Conv2d/Linear weight of ``model`` in place; returns it.

    The last Conv2d/Linear is taken as the read-out (its bias kept in whole
    weight steps, as the program carries it); the others' biases stay free.

    ``learn_scales`` makes each channel's step a trained parameter (LSQ); keep
    it in the optimizer (``model.parameters()`` includes it). ``calibration``
    (model inputs (N, C, H, W) of integer counts) starts from the converter's
    calibrated post-training quantization instead: its scales, integer weights
    and thresholds (as biases centred between the integers), so fine-tuning
    begins where the converter's best program is, not at the weights' squared-error
    rounding.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            raise ConversionError(
                "qat: fold BatchNorm into the preceding layer before quantization-aware "
                "training (the converter quantizes the folded weights)"
            )
    start = _calibrated_start(model, calibration) if calibration is not None else {}
    weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear) and not parametrize.is_parametrized(
            module, "weight"
        ):
            scale = None
            if name in start:
                scale, weight, bias = start[name]
                with torch.no_grad():
                    module.weight.copy_(torch.from_numpy(weight).to(module.weight.dtype))
                    if module.bias is None:
                        module.bias = nn.Parameter(torch.zeros(len(bias)))
                    module.bias.copy_(torch.from_numpy(bias).to(module.bias.dtype))
            quantizer = Int4PerChannel(module.weight, learn_scale=learn_scales, scale=scale)
            parametrize.register_parametrization(module, "weight", quantizer)
            if module.bias is not None and module is weighted[-1]:  # the read-out
                parametrize.register_parametrization(module, "bias", BiasOnGrid(quantizer))
    return model


def _calibrated_start(
    model: nn.Module, calibration: torch.Tensor
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per layer name: (scale, weight s * q, bias) of the converter's calibrated int4 layers."""
    from spikefleet.convert.compat import lower
    from spikefleet.convert.extraction import extract
    from spikefleet.convert.quantize import pre_pool_shape, quantize_stages

    if calibration.dim() != 4:
        raise ConversionError(
            f"qat: calibration inputs have shape {tuple(calibration.shape)}; give the model's "
            "(N, C, H, W) inputs"
        )
    was_training = model.training
    model.eval()
    stages = lower(extract(model, calibration[:32])).stages
    model.train(was_training)
    frames = calibration.detach().permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)
    quantized = quantize_stages(stages, calibration=frames)
    modules = dict(model.named_modules())
    start: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for index, stage in enumerate(stages):
        module = modules.get(stage.name)
        assert isinstance(module, nn.Conv2d | nn.Linear)
        weight = module.weight.detach().double().numpy()
        if weight.shape != stage.weight.shape or not np.allclose(
            weight, stage.weight, rtol=1e-5, atol=1e-7
        ):
            raise ConversionError(
                f"qat: {stage.name}'s weights are not the converter's (a folded BatchNorm or "
                "input scale): start from the weights' own clipping (no calibration)"
            )
        scale = quantized.scales[index]
        q = quantized.integer[index].reshape(weight.shape)
        if stage.spike is not None:
            area = 1
            if stage.pool == "gap":
                _, h, w = pre_pool_shape(stage)
                area = h * w
            bias = stage.threshold - scale * (quantized.thresholds[index] + 0.5) / area
        else:
            bias = scale * np.rint(quantized.biases[index] / scale)
        start[stage.name] = (scale, q * scale.reshape(-1, *([1] * (q.ndim - 1))), bias)
    return start


@dataclass(frozen=True)
class QATConfig:
    """How to fine-tune.

    ``distill`` weighs the float teacher's scores (Hinton's knowledge
    distillation at ``temperature``) against the labels' cross entropy: the
    fine-tuned model should compute what the original computes, and the
    teacher's soft scores carry more of that than the labels do. The learning
    rate decays to zero on a cosine (a restart at a constant rate walked the
    reference network away from its optimum). ``learn_scales``: LSQ steps, trained as
    log s at ``scale_learning_rate``. ``optimizer``: Adam moves every weight by
    about the rate per step whatever its gradient; SGD's steps follow the
    gradient's size. ``schedule``: ``"cosine"`` decays from ``learning_rate``
    to zero (a fine-tune near a good point); ``"onecycle"`` warms up to it and
    anneals (torch's ``OneCycleLR``), the reference network's own training
    schedule, for QAT through a whole training run. ``weight_decay`` is
    decoupled (AdamW; SGD's L2) and never applied to learned steps.
    ``frames_per_sample``: each run of that many consecutive inputs is one
    sample (N-DIGITS: one frame per saccade) whose class is the argmax of its
    summed scores, as ``ndigits.predict_sample`` decides it; the loss (and the
    held-out loss and accuracy) are then the sample's, so training optimises
    the decision that is scored rather than each frame's on its own. Batches
    then hold ``batch_size // frames_per_sample`` whole samples.
    """

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 2e-4
    seed: int = 0
    distill: float = 0.0
    temperature: float = 2.0
    learn_scales: bool = False
    scale_learning_rate: float | None = None  # of log s; default 10 x learning_rate
    optimizer: Literal["adam", "sgd"] = "adam"  # sgd: momentum 0.9
    schedule: Literal["cosine", "onecycle"] = "cosine"
    weight_decay: float = 0.0
    frames_per_sample: int = 1


@dataclass(frozen=True)
class EpochStats:
    """One epoch of :func:`fine_tune` (epoch 0: the prepared model before any step)."""

    epoch: int
    epochs: int
    train_loss: float | None
    validation_loss: float | None
    validation_accuracy: float | None
    best: bool


def _float_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` with its original float weights."""
    teacher = copy.deepcopy(model)
    for module in teacher.modules():
        for name in ("bias", "weight"):
            if parametrize.is_parametrized(module, name):
                parametrize.remove_parametrizations(module, name, leave_parametrized=False)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher.eval()


def fine_tune(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    config: QATConfig | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: Callable[[EpochStats], None] | None = None,
    *,
    teacher: nn.Module | None = None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    calibration: torch.Tensor | None = None,
) -> nn.Module:
    """Fine-tune a per-frame classifier (scores = model(x)) with int4 fake quantization.

    The loss is cross entropy, mixed with distillation from ``teacher`` (default:
    a float copy of ``model`` as it comes in) when ``config.distill`` > 0. With
    ``validation`` (inputs, labels the training never sees) the model keeps the
    epoch whose loss there is lowest (epoch 0, the prepared model, included):
    fine-tuning for a fixed count of epochs can end past the best point.
    ``calibration`` inputs start it from the converter's calibrated quantization
    (see :func:`prepare`).
    """
    config = config or QATConfig()
    if config.optimizer not in ("adam", "sgd"):
        raise ConversionError(f"qat: optimizer {config.optimizer!r}: choose adam or sgd")
    if config.schedule not in ("cosine", "onecycle"):
        raise ConversionError(f"qat: schedule {config.schedule!r}: choose cosine or onecycle")
    group = config.frames_per_sample
    for name, given in (
        ("inputs", labels),
        ("validation", None if validation is None else validation[1]),
    ):
        if given is None:
            continue
        if group < 1 or len(given) % group:
            raise ConversionError(
                f"qat: {len(given)} {name} do not split into samples of "
                f"frames_per_sample={group} frames: give whole samples, frames in order"
            )
        if group > 1 and bool((given.reshape(-1, group) != given.reshape(-1, group)[:, :1]).any()):
            raise ConversionError(
                f"qat: the {name}' labels change within a sample of {group} frames: give each "
                "sample's frames consecutively"
            )
    if config.distill > 0 and teacher is None:
        teacher = _float_teacher(model)
    prepare(model, learn_scales=config.learn_scales, calibration=calibration)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    scales = [p for name, p in model.named_parameters() if name.endswith("log_scale")]
    others = [p for name, p in model.named_parameters() if not name.endswith("log_scale")]
    scale_rate = config.scale_learning_rate or 10 * config.learning_rate
    groups: list[dict[str, Any]] = [
        {"params": others, "lr": config.learning_rate, "weight_decay": config.weight_decay}
    ]
    if scales:
        groups.append({"params": scales, "lr": scale_rate, "weight_decay": 0.0})
    optimizer: torch.optim.Optimizer
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.learning_rate, momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    per_batch = max(1, config.batch_size // group)  # whole samples per batch
    samples = len(inputs) // group
    steps = max(1, config.epochs * -(-samples // per_batch))
    schedule: torch.optim.lr_scheduler.LRScheduler
    if config.schedule == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, [g["lr"] for g in groups], total_steps=steps
        )
    else:
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    ce = nn.CrossEntropyLoss()
    temperature = config.temperature

    def per_sample(scores: torch.Tensor) -> torch.Tensor:
        return scores if group == 1 else scores.reshape(-1, group, scores.shape[-1]).sum(1)

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of whole samples x (frames in order), y their frames' labels."""
        scores = per_sample(model(x))
        y = y[::group]
        loss = ce(scores, y)
        if teacher is None or config.distill <= 0:
            return loss
        with torch.no_grad():
            target = nn.functional.log_softmax(per_sample(teacher(x)) / temperature, dim=1)
        kd = nn.functional.kl_div(
            nn.functional.log_softmax(scores / temperature, dim=1),
            target,
            log_target=True,
            reduction="batchmean",
        )
        return config.distill * temperature**2 * kd + (1 - config.distill) * loss

    def validate() -> tuple[float, float] | None:
        if validation is None:
            return None
        model.eval()
        total = correct = 0.0
        chunk = group * (1024 // group + 1)
        count = len(validation[0]) // group
        with torch.no_grad():
            for start in range(0, len(validation[0]), chunk):
                x = validation[0][start : start + chunk]
                y = validation[1][start : start + chunk]
                total += float(loss_of(x, y)) * (len(x) // group)
                correct += float((per_sample(model(x)).argmax(1) == y[::group]).sum())
        return total / count, correct / count

    best_loss = float("inf")
    best_state: dict[str, Any] | None = None

    def checkpoint(epoch: int, train_loss: float | None) -> None:
        nonlocal best_loss, best_state
        measured = validate()
        best = measured is not None and measured[0] < best_loss
        if best and measured is not None:
            best_loss = measured[0]
            best_state = copy.deepcopy(model.state_dict())
        if progress is not None:
            progress(
                EpochStats(
                    epoch,
                    config.epochs,
                    train_loss,
                    None if measured is None else measured[0],
                    None if measured is None else measured[1],
                    best,
                )
            )

    checkpoint(0, None)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(samples, generator=generator)
        total = 0.0
        for start in range(0, samples, per_batch):
            chosen = order[start : start + per_batch]
            batch = (chosen[:, None] * group + torch.arange(group)).reshape(-1)
            x = inputs[batch]
            if augment is not None:
                x = augment(x)
            loss = loss_of(x, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(chosen)
        checkpoint(epoch + 1, total / samples)
    if best_state is not None:
        model.load_state_dict(best_state)
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
