"""ANN -> SNN conversion (Diehl et al. 2015, Rueckauer et al. 2017; QCFS: Bu et al. 2022), the algorithm.

A trained `ann` or `cnn` (snn.architectures.MLP, CNN) is read as a chain of stages, each
`[pooling/flatten] -> Linear or Conv2d [-> BatchNorm] -> ReLU or QCFS`, the last without an activation. Its spiking
twin (SpikingMLP, SpikingCNN: the same stages, integrate-and-fire neurons with threshold 1 and reset by subtraction,
analog input at every step, readout=integrator) gets the same weights, with
- BatchNorm folded into the weighted layer (exact in eval mode: `folded`),
- layer-wise normalisation: stage l's weights and bias are divided by lambda_l, the scale of its activations, and its
  weights multiplied by lambda_{l-1} (the input's scale is 1: pixels in [0, 1]; the output's is 1: the integrator
  returns the ANN's own logits). ReLU: lambda_l is the `percentile` of the layer's positive activations on
  calibration images of the training split (max-normalisation: their maximum). QCFS: the trained clip.
A neuron's firing rate x threshold then approximates the ANN activation / lambda_l, clipped to [0, 1].
Average pooling and flattening are linear: they carry over unchanged. Max-pooling of spike trains is not the spike
train of the max-pooled rates, and there is no exact conversion for it: it is refused (train with model.pool=avg).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from snn.checks import ConfigError
from snn.qcfs import QCFS

WEIGHTED = (nn.Linear, nn.Conv2d)
LINEAR = (nn.Flatten, nn.AvgPool2d)  # carried over unchanged
ACTIVATIONS = (nn.ReLU, QCFS)
MAX_POOLING = "it max-pools (model.pool=max), which has no exact spiking equivalent; train the cnn with model.pool=avg"


@dataclass
class Stage:
    weighted: nn.Linear | nn.Conv2d
    batchnorm: nn.BatchNorm2d | None
    activation: nn.Module | None  # None: the output layer


def _refuse(what: str) -> ConfigError:
    return ConfigError(f"the ANN cannot be converted: {what}")


def ann_stages(net: nn.Module) -> list[Stage]:
    """The ANN's stages; ConfigError (one line) for a layer conversion does not know or an order it cannot map."""
    layers = getattr(net, "layers", None)
    if getattr(net, "spiking", False) or not isinstance(layers, nn.Sequential):
        raise _refuse(f"{type(net).__name__} is not an ANN baseline (model=ann or model=cnn)")
    stages, weighted, batchnorm = [], None, None
    for index, layer in enumerate(layers):
        where = f"layer {index} ({type(layer).__name__})"
        if isinstance(layer, nn.MaxPool2d):
            raise _refuse(MAX_POOLING)
        if isinstance(layer, LINEAR) and weighted is None:
            continue
        if isinstance(layer, WEIGHTED) and weighted is None:
            weighted = layer
        elif isinstance(layer, nn.BatchNorm2d) and weighted is not None and batchnorm is None:
            batchnorm = layer
        elif isinstance(layer, ACTIVATIONS) and weighted is not None:
            stages.append(Stage(weighted, batchnorm, layer))
            weighted, batchnorm = None, None
        else:
            allowed = "Flatten, AvgPool2d, Linear, Conv2d, BatchNorm2d, ReLU, QCFS in the order of snn.architectures"
            raise _refuse(f"{where} cannot be converted here; convertible layers: {allowed}")
    if weighted is None:
        raise _refuse("it does not end with a Linear layer (the output layer)")
    return [*stages, Stage(weighted, batchnorm, None)]


@torch.no_grad()
def folded(stage: Stage) -> tuple[torch.Tensor, torch.Tensor]:
    """The stage's weight and bias with its BatchNorm (eval mode: running statistics) folded in."""
    weight = stage.weighted.weight.detach().float().clone()
    out = weight.shape[0]
    bias = stage.weighted.bias.detach().float().clone() if stage.weighted.bias is not None else torch.zeros(out)
    bn = stage.batchnorm
    if bn is not None:
        gamma = bn.weight.detach().float() if bn.affine else torch.ones(out)
        beta = bn.bias.detach().float() if bn.affine else torch.zeros(out)
        scale = gamma / torch.sqrt(bn.running_var.float() + bn.eps)
        weight *= scale.view(-1, *[1] * (weight.dim() - 1))
        bias = (bias - bn.running_mean.float()) * scale + beta
    return weight, bias


def fold_batchnorm(conv: nn.Conv2d, batchnorm: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d with bias computing what `batchnorm(conv(x))` computes in eval mode."""
    weight, bias = folded(Stage(conv, batchnorm, None))
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    with torch.no_grad():
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
    return fused


def _percentile(values: torch.Tensor, percentile: float) -> float:
    if values.numel() == 0:
        return 1.0  # a layer that never fires on the calibration images: any scale leaves it silent
    k = max(1, math.ceil(percentile / 100 * values.numel()))
    return float(values.kthvalue(k).values)


@torch.no_grad()
def activation_scales(net: nn.Module, stages: list[Stage], images, percentile: float) -> list[float]:
    """lambda_l per hidden stage: a QCFS net's trained clips; else the `percentile` (100: the maximum) of each ReLU's
    positive outputs over `images` (an iterable of `[B, ...]` batches of the training split; Rueckauer et al. take
    the non-zero activations too)."""
    hidden = [stage.activation for stage in stages[:-1]]
    if all(isinstance(a, QCFS) for a in hidden):
        clips = [float(a.clip) for a in hidden]
        if not all(c > 0 and math.isfinite(c) for c in clips):
            raise _refuse(f"its QCFS clips {clips} must be finite and > 0")
        return clips
    if any(isinstance(a, QCFS) for a in hidden):
        raise _refuse("it mixes ReLU and QCFS layers")
    positive: list[list[torch.Tensor]] = [[] for _ in hidden]
    hooks = [
        a.register_forward_hook(lambda m, args, out, i=i: positive[i].append(out[out > 0].float().cpu()))
        for i, a in enumerate(hidden)
    ]
    training = net.training
    try:
        net.eval()
        for batch in images:
            net(batch)
    finally:
        net.train(training)
        for hook in hooks:
            hook.remove()
    return [_percentile(torch.cat(values) if values else torch.empty(0), percentile) for values in positive]


@torch.no_grad()
def load_converted(snn: nn.Module, stages: list[Stage], scales: list[float]) -> None:
    """Write the folded, normalised weights into `snn`'s stages (a SpikingNet of the same stages, IF neurons with
    threshold 1, readout=integrator). SpikingCNN's convolutions have no bias: the stage's BatchNorm then holds the
    folded bias as an eval-mode shift (weight 1, mean 0, variance 1 - eps)."""
    if len(snn.stages) != len(stages) or len(scales) != len(stages) - 1:
        raise _refuse(f"its {len(stages)} stages do not match the spiking net's {len(snn.stages)}")
    previous = 1.0  # the input: pixels in [0, 1], the current of the direct encoding
    for ann, target, scale in zip(stages, snn.stages, [*scales, 1.0]):
        weight, bias = folded(ann)
        weighted = next(m for m in target.modules() if isinstance(m, WEIGHTED))
        batchnorm = next((m for m in target.modules() if isinstance(m, nn.BatchNorm2d)), None)
        weighted.weight.copy_(weight * (previous / scale))
        if weighted.bias is not None:
            weighted.bias.copy_(bias / scale)
        else:
            batchnorm.weight.fill_(1.0)
            batchnorm.bias.copy_(bias / scale)
            batchnorm.running_mean.zero_()
            batchnorm.running_var.fill_(1.0 - batchnorm.eps)  # sqrt(var + eps) = 1
        previous = scale
