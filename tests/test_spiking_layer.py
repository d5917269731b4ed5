"""The spiking-layer contract (snn/spiking_layer.py): shapes from the architecture, step vs run vs snnTorch, the
refusal to export what has no NIR node of its own, and recurrence as a container (snn/recurrent.py)."""

import json
from functools import partial

import pytest
import snntorch
import torch

from snn.architectures import SpikingCNN, SpikingMLP
from snn.neurons import IF, LIF, PLIF, SnntorchLeaky
from snn.nir_graph import NIRError, to_nir
from snn.recurrent import Recurrent
from snn.spike_stats import SpikeStats, Trace
from snn.spiking_layer import SpikingLayer
from tests.conftest import SIZES, train_tiny


def test_each_neuron_is_built_with_its_stage_shape():
    mlp = SpikingMLP(partial(LIF), hidden_sizes=[20, 30], **SIZES)
    assert [n.shape for n in mlp.neurons] == [(20,), (30,), (10,)]
    cnn = SpikingCNN(partial(LIF), channels=[4, 8], hidden_size=16, **SIZES)
    assert [n.shape for n in cnn.neurons] == [(4, 28, 28), (8, 14, 14), (16,), (10,)]
    with torch.no_grad():
        _, trace = cnn.eval()(torch.rand(2, 3, 1, 28, 28), trace=True)
    assert [tuple(s.shape[2:]) for s in trace.spikes] == [n.shape for n in cnn.neurons]
    assert all(bn.num_batches_tracked == 0 for bn in cnn.modules() if isinstance(bn, torch.nn.BatchNorm2d))


def test_a_factory_that_builds_no_spiking_layer_is_refused():
    with pytest.raises(ValueError, match=r"^neuron='ReLU' is not allowed: a SpikingLayer \(the contract"):
        SpikingMLP(lambda shape: torch.nn.ReLU(), hidden_sizes=[4], **SIZES)


def _stepped(layer, current):
    state, spikes, membranes = None, [], []
    for current_t in current:
        spikes_t, state = layer.step(current_t, state)
        spikes.append(spikes_t)
        membranes.append(state)
    return torch.stack(spikes), torch.stack(membranes)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("neuron", [partial(LIF, 0.85, 0.7), partial(IF, 0.7), partial(PLIF, 0.85, 0.7)])
def test_lif_step_equals_run_and_snntorch_leaky(neuron, reset):
    torch.manual_seed(0)
    current = (torch.randn(30, 8, 33) * 0.8 + 0.3).requires_grad_()
    layer = neuron(reset=reset, shape=(33,))
    weights = torch.randn(30, 8, 33)

    def outputs(run):
        spikes, membrane = run(current)
        (grad,) = torch.autograd.grad((spikes * weights).sum() + membrane.sum(), current)
        return spikes, membrane, grad

    stepped, fused = outputs(partial(_stepped, layer)), outputs(layer.run)
    assert torch.equal(stepped[0], fused[0]) and 0.05 < stepped[0].mean() < 0.95
    torch.testing.assert_close(stepped[1], fused[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(stepped[2], fused[2], rtol=1e-5, atol=1e-5)
    leaky = snntorch.Leaky(beta=layer.beta, threshold=0.7, reset_mechanism=reset, spike_grad=layer.surrogate)
    theirs = outputs(lambda c: tuple(map(torch.stack, zip(*(leaky(c_t) for c_t in c)))))
    assert torch.equal(stepped[0], theirs[0]) and torch.equal(stepped[1], theirs[1])
    torch.testing.assert_close(stepped[2], theirs[2], rtol=0, atol=0)


def test_a_layer_that_only_steps_runs_through_the_default_loop():
    class AboveOne(SpikingLayer):  # spikes where the current is above 1, no memory
        def step(self, current_t, state=None):
            return (current_t > 1).float(), current_t

    current = torch.tensor([[[0.5]], [[1.5]]])
    spikes, membrane = AboveOne(shape=(1,)).run(current[:1], steps=3)  # one step repeated (direct encoding)
    assert spikes.shape == (3, 1, 1) and spikes.sum() == 0 and torch.equal(membrane, torch.full((3, 1, 1), 0.5))
    assert AboveOne()(current).flatten().tolist() == [0.0, 1.0]
    assert AboveOne().threshold is None and AboveOne().synops(current) == 0


class OtherDynamics(LIF):
    """A LIF with other dynamics: must not be exported as a plain LIF."""

    def run(self, current, steps=None):
        spikes, membrane = super().run(current, steps)
        return spikes, membrane * 0.5


def test_subclasses_with_other_dynamics_are_not_exported_as_their_parent():
    assert OtherDynamics.nir_node is SpikingLayer.nir_node
    assert SnntorchLeaky.nir_node is LIF.nir_node and PLIF.nir_node is LIF.nir_node  # same dynamics, declared
    net = SpikingMLP(partial(OtherDynamics, reset="zero"), hidden_sizes=[8], **SIZES)
    message = "^OtherDynamics has no NIR node: it defines no nir_node for its own dynamics, so it cannot be exported$"
    with pytest.raises(NIRError, match=message):
        to_nir(net, SIZES["input_shape"])


def _recurrent_by_hand(net, x, weights):
    """The recurrent MLP written out: I[t] = stage(x[t]) + W s[t-1], LIF dynamics as snnTorch's Leaky."""
    h = x
    for stage, layer, w in zip(net.stages, net.neurons, weights):
        currents, s, u, out, membranes = stage(h.flatten(0, 1)).view(*h.shape[:2], -1), None, None, [], []
        for current in currents:
            if s is not None:
                current = current + s @ w.T
                reset = (u > 1.0).float()
                u = 0.9 * u + current - reset * 1.0
            else:
                u = current
            s = layer.neuron.surrogate(u - 1.0)
            out.append(s)
            membranes.append(u)
        h = torch.stack(out)
    return h, torch.stack(membranes)


def test_recurrent_net_equals_a_hand_written_step_loop():
    torch.manual_seed(0)
    net = SpikingMLP(partial(Recurrent, partial(LIF, 0.9)), hidden_sizes=[12], readout="membrane", input_shape=(6,),
                     num_classes=4, sparse_input="never")  # fmt: skip
    assert [n.weight.shape for n in net.neurons] == [(12, 12), (4, 4)]
    for p in net.parameters():
        p.data.mul_(3)  # enough current for spikes in both layers
    x = (torch.rand(8, 5, 6) < 0.5).float()
    with torch.no_grad():
        logits, trace = net(x, trace=True)
    spikes, membrane = _recurrent_by_hand(net, x, [n.weight for n in net.neurons])
    assert torch.equal(trace.spikes[-1], spikes) and all(0 < s.mean() < 1 for s in trace.spikes)
    torch.testing.assert_close(trace.membrane, membrane)

    grads = [torch.autograd.grad(out.sum(), list(net.parameters())) for out in (net(x), membrane_of(net, x))]
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs)
        assert ours.abs().sum() > 0


def membrane_of(net, x):
    return _recurrent_by_hand(net, x, [n.weight for n in net.neurons])[1].mean(0)


def test_recurrent_with_zero_weight_is_the_plain_net():
    torch.manual_seed(0)
    plain = SpikingMLP(partial(LIF, 0.9), hidden_sizes=[12], input_shape=(6,), num_classes=4, sparse_input="never")
    recurrent = SpikingMLP(partial(Recurrent, partial(LIF, 0.9)), hidden_sizes=[12], input_shape=(6,), num_classes=4,
                           sparse_input="never")  # fmt: skip
    recurrent.stages.load_state_dict(plain.stages.state_dict())
    for layer in recurrent.neurons:
        torch.nn.init.zeros_(layer.weight)
    x = torch.rand(7, 3, 6) * 3
    (a, trace_a), (b, trace_b) = plain(x, trace=True), recurrent(x, trace=True)
    assert torch.equal(a, b) and trace_a.spikes[0].sum() > 0
    torch.testing.assert_close(trace_a.membrane, trace_b.membrane)


def test_recurrent_synops_are_counted():
    net = SpikingMLP(partial(Recurrent, partial(LIF)), hidden_sizes=[3], input_shape=[4], num_classes=2)
    inputs = torch.zeros(2, 1, 4)
    inputs[0, 0, :3] = 1  # 3 + 1 input spikes, fan-out 3
    inputs[1, 0, 0] = 1
    hidden = torch.tensor([[[1.0, 0, 1]], [[0, 0, 1]]])  # 2 spikes fed back at t=0 (fan-out 3); t=1's are not
    output = torch.tensor([[[1.0, 0]], [[0, 1]]])  # 1 spike fed back at t=0 (fan-out 2), into the 2-way layer
    stats = SpikeStats(net)
    stats.update(Trace(inputs=inputs, spikes=[hidden, output]))
    assert stats.compute()["synops"] == 4 * 3 + 3 * 2 + 2 * 3 + 1 * 2


def test_recurrent_layers_refuse_export_only_for_their_neuron():
    """A Recurrent layer exports as a cycle (tests/test_nir_recurrent.py); the neuron it wraps refuses as its own."""
    net = SpikingMLP(partial(Recurrent, partial(LIF, reset="subtract")), hidden_sizes=[8], **SIZES)
    with pytest.raises(NIRError, match="^the network cannot be exported exactly: it was trained with neuron.reset="):
        to_nir(net, SIZES["input_shape"])
    net = SpikingMLP(partial(Recurrent, partial(LIF, reset="zero")), hidden_sizes=[8], **SIZES)
    assert ("stage0_lif", "stage0_rec") in to_nir(net, SIZES["input_shape"]).edges


def test_neuron_recurrent_lif_trains_reloads_and_refuses_export(tmp_path, mnist_root):
    """The preset conf/neuron/recurrent_lif.yaml: a real tiny run, its checkpoint rebuilt, its SynOps recorded."""
    from snn.evaluation import load_classifier

    run = train_tiny(tmp_path, mnist_root, "neuron=recurrent_lif", "T=3", "model.hidden_sizes=[16]",
                     "trainer.max_epochs=1")  # fmt: skip
    results = json.loads((run / "results.json").read_text())
    assert results["choices"]["neuron"] == "recurrent_lif" and results["test/synops"] > 0
    module, _ = load_classifier(run / "checkpoints" / "best.ckpt")
    assert [type(n).__name__ for n in module.net.neurons] == ["Recurrent", "Recurrent"]
    assert [n.weight.shape for n in module.net.neurons] == [(16, 16), (10, 10)]
    with pytest.raises(NIRError, match="it was trained with neuron.reset=subtract"):  # the preset's reset
        to_nir(module.net, SIZES["input_shape"])
