"""Network architectures.

Spiking nets are a chain of stages: a stage's stateless layers (Linear or Conv2d + BatchNorm, with any pooling
before them) run once on the time-flattened `[T*B, ...]` batch, then its spiking neuron runs over `[T, B, ...]`. The
neuron is a SpikingLayer (snn/spiking_layer.py) built for its stage's output shape: `neuron(shape=...)`.
Non-spiking baselines (`spiking = False`) take the plain `[B, ...]` image. Every model is told the shape of its
input and the number of classes by the data module (snn/data.py) it is trained on.
"""

import functools
import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from snn.checks import is_count, require
from snn.pooling import MaxPool2d
from snn.qcfs import QCFS
from snn.recurrent import Recurrent, check_options
from snn.sparse_input import SparseInputLinear
from snn.spike_stats import Trace
from snn.spiking_layer import SpikingLayer

READOUTS = ("spike_count", "membrane")  # read off the output layer's spiking neurons (both exported to NIR)
INTEGRATOR = "integrator"  # the output layer has no neuron: logits = its input current summed over T, divided by T
ACTIVATIONS = ("relu", "qcfs")  # the ANN baselines' hidden activation; qcfs: snn.qcfs, for conversion to IF neurons
POOLS = {"max": MaxPool2d, "avg": nn.AvgPool2d}  # avg: exportable to NIR, which has no max-pooling


def _check_sizes(sizes: Sequence[int], key: str, example: str) -> list[int]:
    sizes = list(sizes) if isinstance(sizes, Sequence) else sizes
    ok = isinstance(sizes, list) and len(sizes) > 0 and all(map(is_count, sizes))
    require(ok, key, sizes, f"a list of integers >= 1, e.g. {example}")
    return sizes


def stage_shapes(stages: Sequence[nn.Module], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Each stage's output shape (no batch), read off one pass of a zero sample; eval mode leaves BatchNorm alone."""
    shapes, x = [], torch.zeros(1, *input_shape)
    with torch.no_grad():
        for stage in stages:
            training = stage.training
            x = stage.eval()(x)
            stage.train(training)
            shapes.append(tuple(x.shape[1:]))
    return shapes


class SpikingNet(nn.Module):
    """`neuron`: the factory of every stage's spiking layer, or a list of one factory per stage.
    `readout`: the logits are the output layer's spike counts (`spike_count`) or its mean membrane (`membrane`) over
    the last `readout_steps` steps, or with `integrator` (no output neuron) its mean input current over them: null =
    all steps (static inputs), k = the last k (all of them when T <= k), for sequences whose class is known only once
    they have been seen (sequential MNIST; LSNN's readout is integrator's)."""

    spiking = True

    def __init__(
        self,
        stages: list[nn.Module],
        neuron: Callable[..., SpikingLayer] | Sequence[Callable[..., SpikingLayer]],
        readout: str,
        input_shape: Sequence[int],
        readout_steps: int | None = None,
    ):
        super().__init__()
        choices = (*READOUTS, INTEGRATOR)
        require(readout in choices, "readout", readout, ", ".join(choices))
        ok = readout_steps is None or is_count(readout_steps)
        require(ok, "readout_steps", readout_steps, "null (all steps) or an integer >= 1 (the last k steps)")
        self.stages = nn.ModuleList(stages)
        shapes = stage_shapes(stages, input_shape)
        spiking_stages = shapes[:-1] if readout == INTEGRATOR else shapes  # an integrator: no neuron at the output
        factories = neuron if isinstance(neuron, Sequence) else [neuron] * len(spiking_stages)
        self.neurons = nn.ModuleList(factory(shape=shape) for factory, shape in zip(factories, spiking_stages))
        for layer in self.neurons:
            ok = isinstance(layer, SpikingLayer)
            require(ok, "neuron", type(layer).__name__, "a SpikingLayer (the contract: snn/spiking_layer.py)")
        self.readout, self.readout_steps = readout, readout_steps

    def forward(self, x: torch.Tensor, trace: bool = False):
        """Logits `[B, classes]`; with `trace=True`, `(logits, Trace)` for spike statistics and plots."""
        T, B = x.shape[:2]
        record, h = Trace(inputs=x), x
        for stage, neuron in itertools.zip_longest(self.stages, self.neurons):
            if h.stride(0) == 0:  # the same input at every step (direct encoding): run the stage once, not T times
                current = stage(h[0]).unsqueeze(0)
            else:
                current = stage(h.flatten(0, 1))
                current = current.view(T, B, *current.shape[1:])
            if neuron is None:  # readout=integrator: the output layer only integrates its current, never fires
                membrane = current.float().expand(T, *current.shape[1:]).cumsum(0)  # float32 as the neurons keep it
                break
            h, membrane = neuron.run(current, steps=T)
            record.spikes.append(h)
        record.membrane = membrane
        k = min(self.readout_steps or T, T)
        if self.readout == INTEGRATOR:  # the mean current of the last k steps, from the running sum
            logits = (membrane[-1] - membrane[-k - 1]) / k if k < T else membrane[-1] / T
        else:
            logits = h[-k:].sum(0) if self.readout == "spike_count" else membrane[-k:].mean(0)
        return (logits, record) if trace else logits

    @property
    def output_threshold(self) -> float | None:
        """The output neurons' threshold, for figures; None for an integrator, which has none."""
        return None if self.readout == INTEGRATOR else self.neurons[-1].threshold


class SpikingMLP(SpikingNet):
    """input -> hidden... -> classes, every Linear followed by a spiking neuron (output layer included).
    `sparse_input`: auto | always | never, the event-driven products of `snn.sparse_input`.
    `recurrent`: the hidden layers' neurons wrapped in `snn.recurrent.Recurrent` (their spikes fed back through a
    learned all-to-all weight); the output layer stays feed-forward. `recurrent_max_norm`: that weight's spectral norm
    limit while training (null: none); `recurrent_init`: uniform | zero, its initialisation. Both are unused (and
    still checked) without `recurrent`, so that a preset's recurrent-vs-feed-forward comparison is one sweep."""

    def __init__(
        self,
        neuron: Callable[..., SpikingLayer],
        hidden_sizes: Sequence[int] = (1000,),
        readout: str = "spike_count",
        sparse_input: str = "auto",
        recurrent: bool = False,
        readout_steps: int | None = None,
        recurrent_max_norm: float | None = None,
        recurrent_init: str = "uniform",
        *,
        input_shape: Sequence[int],
        num_classes: int,
    ):
        hidden = _check_sizes(hidden_sizes, "hidden_sizes", "[1000] or [500,500]")
        require(isinstance(recurrent, bool), "recurrent", recurrent, "true or false")
        check_options(recurrent_max_norm, recurrent_init)
        sizes = [math.prod(input_shape), *hidden, num_classes]
        stages = [
            nn.Sequential(nn.Flatten(), SparseInputLinear(a, b, mode=sparse_input))
            for a, b in zip(sizes[:-1], sizes[1:])
        ]
        options = dict(max_norm=recurrent_max_norm, init=recurrent_init)
        hidden_neuron = functools.partial(Recurrent, neuron, **options) if recurrent else neuron
        neurons = [hidden_neuron] * len(hidden) + [neuron]
        super().__init__(stages, neurons, readout, input_shape, readout_steps)
        if recurrent and any(isinstance(layer.neuron, Recurrent) for layer in self.neurons[:-1]):
            allowed = "false with a neuron that is recurrent itself (neuron=recurrent_lif)"
            require(False, "recurrent", recurrent, allowed)


def _conv_stages(
    channels: Sequence[int],
    hidden_size: int,
    input_shape: Sequence[int],
    num_classes: int,
    linear=nn.Linear,
    pool: str = "max",
) -> list[nn.Sequential]:
    """conv-BN (-pool) x len(channels), then FC hidden, then FC out; pooling (2x2, `max` or `avg`) opens the
    following stage."""
    require(pool in POOLS, "pool", pool, ", ".join(POOLS))
    channels = [input_shape[0], *_check_sizes(channels, "channels", "[32,64,128]")]
    require(is_count(hidden_size), "hidden_size", hidden_size, "an integer >= 1")
    stages = []
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        pooling = [POOLS[pool](2)] if i else []
        stages.append(nn.Sequential(*pooling, nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)))
    height, width = (side // 2 ** (len(channels) - 1) for side in input_shape[1:])
    stages.append(nn.Sequential(POOLS[pool](2), nn.Flatten(), linear(channels[-1] * height * width, hidden_size)))
    stages.append(nn.Sequential(linear(hidden_size, num_classes)))
    return stages


class SpikingCNN(SpikingNet):
    """(conv3x3-BN-spike-pool) per entry of `channels` -> FC hidden (spiking) -> FC classes (spiking).
    `pool`: max | avg (2x2); only avg can be exported to NIR."""

    def __init__(
        self,
        neuron: Callable[..., SpikingLayer],
        channels: Sequence[int] = (32, 64),
        hidden_size: int = 128,
        readout: str = "membrane",
        sparse_input: str = "auto",  # for the fully connected stages, whose inputs are spikes
        pool: str = "max",
        *,
        input_shape: Sequence[int],
        num_classes: int,
    ):
        linear = functools.partial(SparseInputLinear, mode=sparse_input)
        stages = _conv_stages(channels, hidden_size, input_shape, num_classes, linear, pool)
        super().__init__(stages, neuron, readout, input_shape)
        # channels-last: oneDNN's convolutions and the pooling run faster on it; outputs follow the weights' layout
        self.to(memory_format=torch.channels_last)


def _activation(activation: str, levels: int) -> Callable[[], nn.Module]:
    """A maker of the hidden activation: ReLU, or QCFS with `levels` steps (only qcfs reads it)."""
    require(activation in ACTIVATIONS, "activation", activation, ", ".join(ACTIVATIONS))
    require(is_count(levels), "levels", levels, "an integer >= 1 (QCFS's quantisation steps L)")
    return nn.ReLU if activation == "relu" else functools.partial(QCFS, levels)


class MLP(nn.Module):
    """The ANN baseline: the MLP shape with ReLU (or `activation=qcfs`: QCFS, which converts to IF neurons at few
    time steps, snn/conversion.py)."""

    spiking = False

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (1000,),
        activation: str = "relu",
        levels: int = 8,
        *,
        input_shape: Sequence[int],
        num_classes: int,
    ):
        super().__init__()
        sizes = [math.prod(input_shape), *_check_sizes(hidden_sizes, "hidden_sizes", "[1000] or [500,500]")]
        act = _activation(activation, levels)
        layers = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), act()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, trace: bool = False):
        logits = self.layers(x)
        return (logits, Trace(inputs=x)) if trace else logits


class CNN(MLP):
    """The ANN counterpart of SpikingCNN: the same stages with ReLU in place of spiking neurons."""

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        hidden_size: int = 128,
        pool: str = "max",
        activation: str = "relu",
        levels: int = 8,
        *,
        input_shape: Sequence[int],
        num_classes: int,
    ):
        nn.Module.__init__(self)
        act = _activation(activation, levels)
        stages = _conv_stages(channels, hidden_size, input_shape, num_classes, pool=pool)
        layers = [m for stage in stages[:-1] for m in (*stage, act())] + list(stages[-1])
        self.layers = nn.Sequential(*layers)
