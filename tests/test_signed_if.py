"""The signed burst IF neuron (snn/signed_if.py): its count follows the input's integral, a QCFS net converts to it
exactly at T = L, and its signed, multiple spikes are counted as spike events."""

import pytest
import torch
from torch import nn

from snn.architectures import CNN, SpikingCNN, SpikingMLP
from snn.conversion import activation_scales, ann_stages, load_converted
from snn.neurons import IF
from snn.qcfs import QCFS
from snn.signed_if import SignedIF
from snn.spike_stats import SpikeStats
from tests.conftest import SIZES


def test_the_count_is_the_clipped_rounded_integral_of_the_input_at_every_step():
    T = 12
    current = torch.randn(T, 50, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.8
    neuron = SignedIF(threshold=0.7, initial=0.5, shape=(7,))
    spikes, membrane = neuron.run(current)
    assert torch.equal(spikes, spikes.round()) and spikes.abs().max() > 1 and spikes.min() < 0  # bursts, negatives
    integral = current.cumsum(0) / 0.7 + 0.5  # in thresholds, with the half-threshold start
    assert torch.equal(spikes.cumsum(0), torch.clamp(torch.floor(integral), 0, T))
    assert torch.allclose(membrane[0], current[0] + 0.35)  # the first step's membrane: start + current
    constant, steps = neuron.run(current[:1], steps=T)  # [1, B, ...] with steps: the same current at every step
    assert torch.equal(constant.cumsum(0)[-1], torch.clamp(torch.floor(T * current[0] / 0.7 + 0.5), 0, T))


def _qcfs_cnn(levels: int) -> CNN:
    torch.manual_seed(0)
    ann = CNN(channels=[4, 8], hidden_size=16, pool="avg", activation="qcfs", levels=levels, **SIZES)
    with torch.no_grad():
        for bn in (m for m in ann.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 2), bn.bias.uniform_(0, 0.5)
        for m in ann.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(2)  # as a trained net's: a stage's input may change by more than a threshold a step
            if isinstance(m, QCFS):
                m.clip.fill_(0.6)  # about the activations' scale: every level is used
    return ann.eval()


@torch.no_grad()
def test_a_qcfs_cnn_converts_exactly_at_T_equal_L_with_signed_neurons_and_not_with_if():
    ann, x, L = _qcfs_cnn(levels=4), torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)), 4
    expected, stages = ann(x), ann_stages(ann)
    errors = {}
    for name, neuron in (("signed_if", lambda shape: SignedIF(initial=0.5, shape=shape)),
                         ("if", lambda shape: IF(initial=0.5, shape=shape))):  # fmt: skip
        snn = SpikingCNN(neuron, channels=[4, 8], hidden_size=16, readout="integrator", pool="avg", **SIZES)
        load_converted(snn, stages, activation_scales(ann, stages, [], 100.0))
        errors[name] = (snn.eval()(x.unsqueeze(0).expand(L, *x.shape)) - expected).abs().max().item()
    assert errors["signed_if"] < 1e-4 < errors["if"] / 100  # exact up to float rounding; IF's one spike a step lags


@torch.no_grad()
def test_bursts_and_negative_spikes_are_each_a_spike_event():
    torch.manual_seed(0)
    net = SpikingMLP(lambda shape: SignedIF(shape=shape), hidden_sizes=[20], readout="integrator", **SIZES).eval()
    with torch.no_grad():
        net.stages[0][-1].weight.mul_(20)  # strong currents: bursts and take-backs
    x = torch.rand(6, 1, 28, 28)
    stats = SpikeStats(net)
    _, trace = net(torch.stack([x, x, -x, -x, -x]), trace=True)  # up, then down: bursts, then take-backs
    stats.update(trace)
    hidden = trace.spikes[0]
    assert hidden.abs().max() > 1 and hidden.min() < 0
    result = stats.compute()
    # each unit of |S| drives the 10 outputs once
    assert result["synops"] == pytest.approx(hidden.abs().sum().item() * 10 / 6)
    assert result["firing_rate/layer1"] == pytest.approx(hidden.abs().mean().item())
