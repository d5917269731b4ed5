"""The 784-1000-10 LIF MLP written four ways, for `benchmarks/throughput.py` (the default `--net mlp`).

This project (fused multi-step LIF, event-driven input products; in float32, under bf16 autocast, and without its
C++ kernels), the snnTorch tutorial loop, and SpikingJelly's multi-step LIFNode. All: LIF beta=0.9 (SpikingJelly:
tau=10, no input decay), threshold 1, subtract reset detached, the atan surrogate, output spike counts.
"""

from functools import partial

import snntorch
import torch
from snntorch import spikegen
from torch import nn

from snn.architectures import SpikingMLP
from snn.data import MNISTDataModule
from snn.encoders import DirectEncoder, RateEncoder
from snn.neurons import LIF

SIZES = {"input_shape": MNISTDataModule.input_shape, "num_classes": MNISTDataModule.num_classes}


class Ours(nn.Module):
    fused_optimizer = True  # as `Classifier.configure_optimizers` builds it: torch's fused Adam

    def __init__(self, T, hidden, direct, sparse_input="auto"):
        super().__init__()
        self.encoder = DirectEncoder(T) if direct else RateEncoder(T)
        self.net = SpikingMLP(partial(LIF, beta=0.9), [hidden], sparse_input=sparse_input, **SIZES)

    def forward(self, images):
        return self.net(self.encoder(images))


class OursBf16(Ours):
    """This project under bf16 autocast (`trainer.precision=bf16-mixed`): event-driven products reading bf16 weights
    and gradients with float32 sums, bf16 currents and spikes, float32 membranes."""

    def forward(self, images):
        with torch.autocast(images.device.type, torch.bfloat16):
            return super().forward(images)


class OursTensorCode(Ours):
    """This project without its C++ kernels (as on a machine without a compiler, or SNN_KERNELS=0)."""

    kernels = False


class SnntorchLoop(nn.Module):
    """The snnTorch tutorial way: one Python step at a time, the first layer recomputed each step."""

    def __init__(self, T, hidden, direct):
        super().__init__()
        self.T, self.direct = T, direct
        self.fc1, self.fc2 = nn.Linear(784, hidden), nn.Linear(hidden, 10)
        grad = snntorch.surrogate.atan()
        self.lif1, self.lif2 = snntorch.Leaky(beta=0.9, spike_grad=grad), snntorch.Leaky(beta=0.9, spike_grad=grad)

    def forward(self, images):
        x = images.flatten(1)
        inputs = None if self.direct else spikegen.rate(x, num_steps=self.T)
        mem1, mem2 = self.lif1.reset_mem(), self.lif2.reset_mem()
        counts = 0
        for step in range(self.T):
            spk1, mem1 = self.lif1(self.fc1(x if self.direct else inputs[step]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            counts = counts + spk2
        return counts


class SpikingJellyMultiStep(nn.Module):
    def __init__(self, T, hidden, direct, backend="torch"):
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate

        lif = partial(
            neuron.LIFNode,
            tau=10.0,
            decay_input=False,
            v_reset=None,
            detach_reset=True,
            surrogate_function=surrogate.ATan(),
            step_mode="m",
            **({} if backend == "torch" else {"backend": backend}),  # SpikingJelly 2.0 has no backend argument
        )
        self.encoder = RateEncoder(T)
        self.fc1, self.lif1, self.fc2, self.lif2 = nn.Linear(784, hidden), lif(), nn.Linear(hidden, 10), lif()

    def forward(self, images):
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        x = self.encoder(images)
        T, B = x.shape[:2]
        h = self.lif1(self.fc1(x.view(T * B, -1)).view(T, B, -1))
        return self.lif2(self.fc2(h.view(T * B, -1)).view(T, B, -1)).sum(0)


def candidates(hidden):
    """(input, name, constructor taking T) rows of the MLP table."""
    rows = [
        ("rate", "this project", partial(Ours, hidden=hidden, direct=False)),
        ("rate", "this project, bf16 autocast", partial(OursBf16, hidden=hidden, direct=False)),
        ("rate", "this project, dense products", partial(Ours, hidden=hidden, direct=False, sparse_input="never")),
        ("rate", "this project, no C++ kernels", partial(OursTensorCode, hidden=hidden, direct=False)),
        ("rate", "snnTorch loop", partial(SnntorchLoop, hidden=hidden, direct=False)),
    ]
    try:
        import spikingjelly  # noqa: F401

        rows.append(("rate", "SpikingJelly multi-step", partial(SpikingJellyMultiStep, hidden=hidden, direct=False)))
    except ImportError:
        print("SpikingJelly is not installed: skipped (pip install -e .[bench])")
    rows += [
        ("direct", "this project", partial(Ours, hidden=hidden, direct=True)),
        ("direct", "snnTorch loop", partial(SnntorchLoop, hidden=hidden, direct=True)),
    ]
    return rows
