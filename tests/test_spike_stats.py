from functools import partial

import pytest
import torch

from snn.architectures import CNN, MLP, SpikingCNN, SpikingMLP
from snn.neurons import LIF
from snn.spike_stats import PJ_PER_AC, PJ_PER_MAC, SpikeStats, Trace
from tests.conftest import SIZES


def test_synops_and_energy_by_hand():
    net = SpikingMLP(partial(LIF), hidden_sizes=[3], input_shape=[4], num_classes=2)  # 4 -> 3 -> 2
    inputs = torch.zeros(2, 1, 4)  # T=2, one sample
    inputs[0, 0, :3] = 1  # 3 input spikes, then 1 more
    inputs[1, 0, 0] = 1
    hidden = torch.tensor([[[1.0, 0, 1]], [[0, 0, 1]]])  # 3 hidden spikes
    output = torch.tensor([[[1.0, 0]], [[0, 0]]])  # 1 output spike (no fan-out)
    stats = SpikeStats(net)
    stats.update(Trace(inputs=inputs, spikes=[hidden, output], membrane=torch.zeros(2, 1, 2)))
    result = stats.compute()
    assert result["synops"] == 4 * 3 + 3 * 2  # each spike reaches every neuron of the next layer
    assert result["macs"] == 0
    assert result["energy_nJ"] == pytest.approx(18 * PJ_PER_AC / 1000)
    assert result["firing_rate/layer1"] == pytest.approx(3 / 6)
    assert result["firing_rate/layer2"] == pytest.approx(1 / 4)
    assert result["spikes_per_sample"] == 4


def test_direct_input_counts_one_dense_product_per_sample():
    net = SpikingMLP(partial(LIF), hidden_sizes=[3], input_shape=[4], num_classes=2)
    images = torch.rand(5, 4)
    with torch.no_grad():
        logits, trace = net(images.expand(6, 5, 4), trace=True)
    stats = SpikeStats(net)
    stats.update(trace)
    result = stats.compute()
    assert result["macs"] == 4 * 3
    assert result["synops"] == float(trace.spikes[0].sum()) * 2 / 5


def test_ann_counts_macs_of_every_layer():
    stats = SpikeStats(MLP(hidden_sizes=[100], **SIZES))
    stats.update(Trace(inputs=torch.rand(7, 1, 28, 28)))
    result = stats.compute()
    assert result["macs"] == 784 * 100 + 100 * 10 and result["synops"] == 0
    assert result["energy_nJ"] == pytest.approx(result["macs"] * PJ_PER_MAC / 1000)


def test_conv_synops_count_each_spike_once_per_synapse_it_drives():
    net = SpikingCNN(partial(LIF), channels=[2], hidden_size=3, **SIZES)  # conv 1->2, pool, fc 392->3, fc 3->10
    inputs = torch.zeros(1, 1, 1, 28, 28)
    inputs[0, 0, 0, 10, 10] = 1  # interior pixel: reaches 3x3 positions x 2 channels
    inputs[0, 0, 0, 0, 0] = 1  # corner pixel: reaches 2x2 positions x 2 channels
    conv_spikes = torch.zeros(1, 1, 2, 28, 28)
    conv_spikes[0, 0, 1, 5, 5] = 1  # survives the 2x2 max-pool as one spike into fc (fan-out 3)
    conv_spikes[0, 0, 1, 5, 4] = 1  # same pooling window: still one spike after pooling
    fc_spikes = torch.tensor([[[1.0, 1, 0]]])  # 2 spikes into the 10-way output
    trace = Trace(inputs=inputs, spikes=[conv_spikes, fc_spikes, torch.zeros(1, 1, 10)])
    stats = SpikeStats(net)
    stats.update(trace)
    assert stats.compute()["synops"] == (9 + 4) * 2 + 1 * 3 + 2 * 10


def test_cnn_macs_match_the_layer_shapes():
    stats = SpikeStats(CNN(channels=[4, 8], hidden_size=16, **SIZES))
    stats.update(Trace(inputs=torch.rand(2, 1, 28, 28)))
    conv1 = 4 * (28 * 3 - 2) ** 2  # 3x3 with padding: border outputs see fewer real inputs
    assert stats.dense_macs[0] == conv1
    assert stats.dense_macs[2:] == [8 * 7 * 7 * 16, 16 * 10]
