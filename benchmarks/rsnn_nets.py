"""The S-MNIST recurrent SNN written three ways, for `benchmarks/throughput.py --net rsnn`.

in-256-10: the image as a sequence of T steps of 784/T pixels each (T=784: one pixel per step, S-MNIST; T=28: one
row per step), a Linear into 256 LIF neurons whose spikes feed back through an all-to-all weight, a Linear into 10
LIF neurons (feed-forward); the loss reads the output membrane's mean over time. LIF beta=0.9, threshold 1, subtract
reset detached, the atan surrogate; the ALIF row is the S-MNIST presets' neuron (learnable beta and rho,
tau_adaptation 200). `breakdown` times the parts of this project's fused loop on CPU. On a GPU "this project" is the
Triton path (snn/triton_recurrent.py) and "no C++ kernels" the plain step loop.
"""

import time
from functools import partial

import snntorch
import torch
from torch import nn

from snn import kernels, recurrent_fused
from snn.alif import ALIF
from snn.architectures import SpikingMLP
from snn.neurons import LIF

HIDDEN = 256


def sequence(images: torch.Tensor, T: int) -> torch.Tensor:
    """[B, 1, 28, 28] -> [T, B, 784 / T]: the pixels in reading order, 784 / T per step."""
    return images.reshape(len(images), T, -1).transpose(0, 1)


class OursRecurrent(nn.Module):
    def __init__(self, T):
        super().__init__()
        self.T = T
        self.net = SpikingMLP(partial(LIF, beta=0.9), [HIDDEN], readout="membrane", recurrent=True,
                              input_shape=(784 // T,), num_classes=10)  # fmt: skip

    def forward(self, images):
        return self.net(sequence(images, self.T))


class OursRecurrentAlif(OursRecurrent):
    """experiment=smnist's network: recurrent ALIF (learned per-neuron beta and rho), the same fused loop."""

    def __init__(self, T):
        nn.Module.__init__(self)
        self.T = T
        neuron = partial(ALIF, beta=0.9, tau_adaptation=200.0, learnable=True)
        self.net = SpikingMLP(neuron, [HIDDEN], readout="membrane", recurrent=True, input_shape=(784 // T,),
                              num_classes=10)  # fmt: skip


class OursRecurrentBf16(OursRecurrent):
    """The LIF net under CPU bf16 autocast (trainer.precision=bf16-mixed): the fused loop's backward products in bf16
    (on a GPU this row runs the float32 path)."""

    def forward(self, images):
        with torch.autocast("cpu", torch.bfloat16, enabled=images.device.type == "cpu"):
            return super().forward(images).float()


class OursRecurrentStepLoop(OursRecurrent):
    """This project without its C++ or Triton kernels (SNN_KERNELS=0): Recurrent's plain autograd step loop."""

    kernels = False


class SnntorchRLeaky(nn.Module):
    """The snnTorch way: RLeaky(all_to_all=True) and Leaky stepped in Python."""

    def __init__(self, T):
        super().__init__()
        self.T = T
        grad = snntorch.surrogate.atan()
        self.fc1, self.fc2 = nn.Linear(784 // T, HIDDEN), nn.Linear(HIDDEN, 10)
        self.rlif = snntorch.RLeaky(beta=0.9, all_to_all=True, linear_features=HIDDEN, spike_grad=grad)
        self.lif = snntorch.Leaky(beta=0.9, spike_grad=grad)

    def forward(self, images):
        spk1, mem1 = self.rlif.reset_mem()
        mem2 = self.lif.reset_mem()
        total = 0
        for x in sequence(images, self.T):
            spk1, mem1 = self.rlif(self.fc1(x), spk1, mem1)
            _, mem2 = self.lif(self.fc2(spk1), mem2)
            total = total + mem2
        return total / self.T


class SpikingJellyRecurrent(nn.Module):
    """SpikingJelly's closest: LinearRecurrentContainer around a single-step LIFNode (its feedback is a Linear of
    [input, last spikes], stepped in Python), the Linear layers and the output LIFNode multi-step."""

    def __init__(self, T):
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        self.T = T
        lif = partial(neuron.LIFNode, tau=10.0, decay_input=False, v_reset=None, detach_reset=True,
                      surrogate_function=surrogate.ATan())  # fmt: skip
        self.fc1 = layer.Linear(784 // T, HIDDEN, step_mode="m")
        self.rec = layer.LinearRecurrentContainer(lif(step_mode="s"), HIDDEN, HIDDEN, bias=False, step_mode="m")
        self.fc2 = layer.Linear(HIDDEN, 10, step_mode="m")
        self.out = lif(step_mode="m", store_v_seq=True)

    def forward(self, images):
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        self.out(self.fc2(self.rec(self.fc1(sequence(images, self.T)))))
        return self.out.v_seq.mean(0)


def candidates():
    """(input, name, constructor taking T) rows of the recurrent table."""
    rows = [
        ("sequence", "this project", OursRecurrent),
        ("sequence", "this project, ALIF (learnable)", OursRecurrentAlif),
        ("sequence", "this project, bf16 autocast", OursRecurrentBf16),
        ("sequence", "this project, no C++ kernels", OursRecurrentStepLoop),
        ("sequence", "snnTorch loop", SnntorchRLeaky),
    ]
    try:
        import spikingjelly  # noqa: F401

        rows.append(("sequence", "SpikingJelly LinearRecurrentContainer", SpikingJellyRecurrent))
    except ImportError:
        print("SpikingJelly is not installed: skipped (pip install -e .[bench])")
    return rows


def _seconds(fn, reps: int = 3) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def breakdown(model: OursRecurrent, images: torch.Tensor) -> None:
    """Where a training step of this project's fused loop goes: the C++ forward loop, the C++ backward loop and, of
    it, the dense per-step products through W; beside them the dense dW GEMM that the loop's event-driven weight
    gradient replaces (each timed alone, on this batch's currents)."""
    if images.device.type != "cpu" or kernels.load() is None:  # the C++ loop's parts: CPU only
        return
    kernels.enabled = True  # the fused loop, whichever row ran last
    ext, layer = kernels.load(), model.net.neurons[0]
    x = sequence(images, model.T)
    with torch.no_grad():
        current = model.net.stages[0](x.flatten(0, 1)).view(*x.shape[:2], -1).contiguous()
        W = layer.weight.detach()
    T, B, n = current.shape
    forward = partial(ext.recurrent_lif_forward, current, W, T, 0.9, 1.0, False, recurrent_fused.DENSE_ABOVE)
    spikes, membrane = forward()
    grad = torch.randn_like(membrane)
    backward = partial(ext.recurrent_lif_backward, grad, None, membrane, W, 0.9, 1.0, False, 0, 2.0, True)
    out, rows = torch.empty(B, n), torch.randn(T, B, n)
    products = partial(lambda: [torch.mm(rows[t], W, out=out) for t in range(T - 1)])
    fired = spikes[:-1].reshape(-1, n)
    gemm = partial(lambda: rows[1:].reshape(-1, n).t().mm(fired))
    whole = _seconds(lambda: torch.nn.functional.cross_entropy(model(images), torch.zeros(B, dtype=int)).backward())
    parts = {
        "training step (all of it)": whole,
        "recurrent layer forward (C++ loop, event-driven)": _seconds(forward),
        "recurrent layer backward (C++ loop, all of it)": _seconds(backward),
        f"  of it: {T - 1} per-step products [{B},{n}]x[{n},{n}]": _seconds(products),
        f"  not in it: the dense dW GEMM [{n},{(T - 1) * B}]x[{(T - 1) * B},{n}] (dW is event-driven)": _seconds(gemm),
    }
    print(f"\nwhere a training step goes (T={T}, batch {B}, hidden spike rate {spikes.mean():.3f}):\n")
    print("| part | ms | share of the step |\n|---|---:|---:|")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds * 1e3:,.1f} | {seconds / whole:.0%} |")
