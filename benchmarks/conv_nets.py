"""The conv SNN of `baseline=csnn` written three ways, for `benchmarks/throughput.py --net conv`.

conv3x3-BN-LIF x [32, 64, 128] with 2x2 max-pooling between, FC 128 (LIF), FC 10 (LIF), direct input, membrane
readout (mean over time of the output layer's membrane). LIF beta=0.9, threshold 1, subtract reset, atan surrogate.
"""

from functools import partial

import snntorch
import torch
import torch.nn.functional as F
from torch import nn

from snn.architectures import SpikingCNN
from snn.data import MNISTDataModule
from snn.encoders import DirectEncoder
from snn.neurons import LIF

SIZES = {"input_shape": MNISTDataModule.input_shape, "num_classes": MNISTDataModule.num_classes}

CHANNELS, HIDDEN = (32, 64, 128), 128


class OursConv(nn.Module):
    fused_optimizer = True  # as `Classifier.configure_optimizers` builds it: torch's fused Adam

    def __init__(self, T, sparse_input="auto"):
        super().__init__()
        self.encoder = DirectEncoder(T)
        self.net = SpikingCNN(partial(LIF, beta=0.9), CHANNELS, HIDDEN, sparse_input=sparse_input, **SIZES)

    def forward(self, images):
        return self.net(self.encoder(images))


class OursConvBf16(OursConv):
    """This project under bf16 autocast (`trainer.precision=bf16-mixed`): convolutions and spikes in bf16."""

    def forward(self, images):
        with torch.autocast(images.device.type, torch.bfloat16):
            return super().forward(images)


class OursConvTensorCode(OursConv):
    """This project without its C++ kernels (as on a machine without a compiler, or SNN_KERNELS=0)."""

    kernels = False


def _conv_bn(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))


class SnntorchConvLoop(nn.Module):
    """The snnTorch tutorial way: one Python step at a time through every layer, the first conv recomputed each
    step (and batch norm statistics taken per step)."""

    def __init__(self, T):
        super().__init__()
        self.T = T
        sizes = [1, *CHANNELS]
        self.convs = nn.ModuleList(_conv_bn(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.fc1, self.fc2 = nn.Linear(CHANNELS[-1] * 3 * 3, HIDDEN), nn.Linear(HIDDEN, 10)
        grad = snntorch.surrogate.atan()
        self.lifs = nn.ModuleList(snntorch.Leaky(beta=0.9, spike_grad=grad) for _ in range(len(CHANNELS) + 2))

    def forward(self, images):
        mems = [lif.reset_mem() for lif in self.lifs]
        total = 0
        for _ in range(self.T):
            h = images
            for i, conv in enumerate(self.convs):
                h, mems[i] = self.lifs[i](conv(F.max_pool2d(h, 2) if i else h), mems[i])
            h, mems[-2] = self.lifs[-2](self.fc1(F.max_pool2d(h, 2).flatten(1)), mems[-2])
            _, mems[-1] = self.lifs[-1](self.fc2(h), mems[-1])
            total = total + mems[-1]
        return total / self.T


class SnntorchConvLoopBf16(SnntorchConvLoop):
    """The same loop under bf16 autocast (snnTorch's Leaky then works on bf16 currents): what bf16 alone gives."""

    def forward(self, images):
        with torch.autocast(images.device.type, torch.bfloat16):
            return super().forward(images)


class SpikingJellyConvMultiStep(nn.Module):
    """SpikingJelly's multi-step mode (`backend`: torch, or on a GPU cupy or triton): stateless layers on [T*B, ...],
    LIFNode over [T, B, ...]; the first conv-BN runs once on the static image and is repeated over time, as in
    SpikingJelly's own conv examples."""

    def __init__(self, T, backend="torch"):
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        self.T = T
        lif = partial(
            neuron.LIFNode, tau=10.0, decay_input=False, v_reset=None, detach_reset=True,
            surrogate_function=surrogate.ATan(), step_mode="m",
            **({} if backend == "torch" else {"backend": backend}),  # SpikingJelly 2.0 has no backend argument
        )  # fmt: skip
        self.static = _conv_bn(1, CHANNELS[0])
        layers = [lif()]
        for c_in, c_out in zip(CHANNELS[:-1], CHANNELS[1:]):
            layers += [
                layer.MaxPool2d(2, step_mode="m"),
                layer.Conv2d(c_in, c_out, 3, padding=1, bias=False, step_mode="m"),
                layer.BatchNorm2d(c_out, step_mode="m"),
                lif(),
            ]
        layers += [layer.MaxPool2d(2, step_mode="m"), layer.Flatten(step_mode="m")]
        layers += [
            layer.Linear(CHANNELS[-1] * 3 * 3, HIDDEN, step_mode="m"),
            lif(),
            layer.Linear(HIDDEN, 10, step_mode="m"),
        ]
        self.layers = nn.Sequential(*layers)
        self.out = lif(store_v_seq=True)

    def forward(self, images):
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        x = self.static(images).unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        self.out(self.layers(x))
        return self.out.v_seq.mean(0)


def candidates():
    """(input, name, constructor taking T) rows of the conv table."""
    rows = [
        ("direct", "this project", OursConv),
        ("direct", "this project, bf16 autocast", OursConvBf16),
        ("direct", "this project, dense products", partial(OursConv, sparse_input="never")),
        ("direct", "this project, no C++ kernels", OursConvTensorCode),
        ("direct", "snnTorch loop", SnntorchConvLoop),
        ("direct", "snnTorch loop, bf16 autocast", SnntorchConvLoopBf16),
    ]
    try:
        import spikingjelly  # noqa: F401

        rows.append(("direct", "SpikingJelly multi-step", SpikingJellyConvMultiStep))
    except ImportError:
        print("SpikingJelly is not installed: skipped (pip install -e .[bench])")
    return rows
