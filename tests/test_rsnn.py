"""Recurrence chosen by config (model.recurrent, model=rsnn) and the readout over the last steps (readout_steps)."""

import json
import re
from functools import partial

import pytest
import torch

from snn.architectures import SpikingMLP
from snn.checks import ConfigError
from snn.config import validate
from snn.neurons import LIF
from snn.nir_graph import NIRError, to_nir
from snn.recurrent import Recurrent
from tests.conftest import SIZES, train_tiny


def test_recurrent_wraps_the_hidden_layers_only():
    net = SpikingMLP(partial(LIF, 0.9), hidden_sizes=[12, 8], recurrent=True, input_shape=(6,), num_classes=4)
    assert [type(n).__name__ for n in net.neurons] == ["Recurrent", "Recurrent", "LIF"]
    assert [n.weight.shape for n in net.neurons[:2]] == [(12, 12), (8, 8)]
    plain = SpikingMLP(partial(LIF, 0.9), hidden_sizes=[12, 8], input_shape=(6,), num_classes=4)
    assert [type(n).__name__ for n in plain.neurons] == ["LIF", "LIF", "LIF"]


def test_a_neuron_already_recurrent_is_not_wrapped_twice():
    message = r"^recurrent=True is not allowed: false with a neuron that is recurrent itself \(neuron=recurrent_lif\)$"
    with pytest.raises(ConfigError, match=message):
        SpikingMLP(partial(Recurrent, partial(LIF)), hidden_sizes=[4], recurrent=True, **SIZES)


@pytest.mark.parametrize("readout", ["membrane", "spike_count", "integrator"])
def test_readout_steps_reads_the_last_k_steps(readout):
    torch.manual_seed(0)
    kwargs = {"hidden_sizes": [16], "readout": readout, "input_shape": (6,), "num_classes": 4, "recurrent": True}
    every, last = SpikingMLP(partial(LIF, 0.9), **kwargs), SpikingMLP(partial(LIF, 0.9), readout_steps=3, **kwargs)
    last.load_state_dict(every.state_dict())
    x = torch.rand(10, 5, 6) * 4
    with torch.no_grad():
        (logits, trace), logits_last = every(x, trace=True), last(x)
    if readout == "integrator":  # the output layer's current, computed here from its Linear and the hidden spikes
        out = every.stages[-1](trace.spikes[-1].flatten(0, 1)).view(10, 5, 4)
    else:
        out = trace.membrane if readout == "membrane" else trace.spikes[-1]
    reduce = torch.sum if readout == "spike_count" else torch.mean
    torch.testing.assert_close(logits, reduce(out, 0))
    torch.testing.assert_close(logits_last, reduce(out[-3:], 0))
    assert not torch.equal(logits, logits_last)
    longer = SpikingMLP(partial(LIF, 0.9), readout_steps=50, **kwargs)  # T <= k: every step
    longer.load_state_dict(every.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(longer(x), logits)


def test_readout_steps_is_checked_and_not_exported(compose_cfg):
    with pytest.raises(ConfigError, match=r"^model.readout_steps=0 is not allowed: null \(all steps\) or an integer"):
        validate(compose_cfg("model.readout_steps=0"))
    net = SpikingMLP(partial(LIF, reset="zero"), hidden_sizes=[8], readout_steps=5, **SIZES)
    with pytest.raises(NIRError, match=r"model.readout_steps\) and NIR has no readout window; train with "):
        to_nir(net, SIZES["input_shape"])


def test_model_rsnn_trains_and_reloads(tmp_path, mnist_root):
    """A real tiny run of the preset: recurrent hidden layer (the fused loop on CPU), membrane read over the last
    steps; its checkpoint rebuilt; the recurrent fan-out counted in its SynOps."""
    from snn.evaluation import load_classifier

    run = train_tiny(tmp_path, mnist_root, "model=rsnn", "T=6", "model.hidden_sizes=[16]", "model.readout_steps=2",
                     "trainer.max_epochs=1")  # fmt: skip
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == "rsnn" and results["test/synops"] > 0
    module, _ = load_classifier(run / "checkpoints" / "best.ckpt")
    net = module.net
    assert [type(n).__name__ for n in net.neurons] == ["Recurrent", "LIF"] and net.readout_steps == 2
    assert net.neurons[0].weight.shape == (16, 16) and net.readout == "membrane"


def test_recurrent_max_norm_keeps_the_weight_within_its_spectral_norm_while_training():
    """model.recurrent_max_norm: each training forward first scales W down to that spectral norm where it is above
    (power iteration, warm-started: checked against the SVD); evaluation leaves W as it is; the limit is no state."""
    torch.manual_seed(0)
    net = SpikingMLP(partial(LIF, 0.9), hidden_sizes=[32], recurrent=True, recurrent_max_norm=0.8, **SIZES)
    layer = net.neurons[0]
    with torch.no_grad():
        layer.weight.normal_(0, 0.3)  # spectral norm ~3.4
    x = torch.rand(5, 2, 1, 28, 28)
    net.eval()
    before = layer.weight.clone()
    net(x)
    assert torch.equal(layer.weight, before)
    net.train()
    for _ in range(15):  # the power iteration's estimate converges over the steps (2 iterations a step)
        net(x)
    weight = layer.weight.detach()
    assert float(torch.linalg.matrix_norm(weight, 2)) == pytest.approx(0.8, rel=0.02)  # the estimate is from below
    assert torch.allclose(weight / weight.norm(), before / before.norm(), rtol=1e-4, atol=1e-6)  # scaled, not changed
    assert "neurons.0._left" not in net.state_dict()


def test_recurrent_init_zero_starts_without_feedback_and_learns_it():
    """model.recurrent_init=zero (SRNN's): W starts at zero, so the layer runs as its neuron alone (the outputs equal
    the feed-forward net's with the same other weights), and one backward gives W a non-zero gradient."""
    torch.manual_seed(0)
    net = SpikingMLP(partial(LIF, 0.9), hidden_sizes=[32], recurrent=True, recurrent_init="zero", **SIZES)
    plain = SpikingMLP(partial(LIF, 0.9), hidden_sizes=[32], **SIZES)
    plain.stages.load_state_dict(net.stages.state_dict())
    layer = net.neurons[0]
    assert torch.count_nonzero(layer.weight) == 0
    x = (torch.rand(8, 4, 1, 28, 28) < 0.3).float() * 4  # strong enough that the hidden layer fires
    out, trace = net(x, trace=True)
    assert trace.spikes[0].sum() > 0 and torch.equal(out, plain(x))
    out.square().sum().backward()
    assert torch.count_nonzero(layer.weight.grad) > 0
    capped = SpikingMLP(partial(LIF, 0.9), hidden_sizes=[32], recurrent=True, recurrent_init="zero",
                        recurrent_max_norm=0.8, **SIZES)  # fmt: skip
    capped(x)  # W = 0: nothing to scale; then W grows, and the limit still finds its norm
    with torch.no_grad():
        capped.neurons[0].weight.normal_(0, 0.3)
    for _ in range(15):
        capped(x)
    assert float(torch.linalg.matrix_norm(capped.neurons[0].weight.detach(), 2)) == pytest.approx(0.8, rel=0.02)


@pytest.mark.parametrize(
    "key, overrides, allowed",
    [
        ("recurrent_max_norm", ("model=rsnn", "model.recurrent_max_norm=0"), "null (no limit) or a finite number > 0"),
        ("recurrent_max_norm", ("model=rsnn", "model.recurrent=false", "model.recurrent_max_norm=-1"),
         "null (no limit) or a finite number > 0"),
        ("recurrent_init", ("model=rsnn", "model.recurrent_init=orthogonal"), "uniform, zero"),
    ],
)  # fmt: skip
def test_recurrent_options_are_checked(compose_cfg, key, overrides, allowed):
    with pytest.raises(ConfigError, match=rf"^model.{key}=.* is not allowed: {re.escape(allowed)}$"):
        validate(compose_cfg(*overrides))


def test_recurrent_against_feed_forward_is_one_sweep(compose_cfg):
    """experiment=smnist sets the recurrent weight's options; with model.recurrent=false they are unused, so
    `-m model.recurrent=true,false` compares the two nets with every other key equal."""
    from snn.build import build_model

    nets = {}
    for recurrent in ("true", "false"):
        cfg = compose_cfg("experiment=smnist", f"model.recurrent={recurrent}", "model.hidden_sizes=[8]")
        validate(cfg)
        nets[recurrent] = build_model(cfg)
    assert [type(n).__name__ for n in nets["true"].neurons] == ["Recurrent", "ALIF"]
    assert [type(n).__name__ for n in nets["false"].neurons] == ["ALIF", "ALIF"]
    assert nets["true"].neurons[0].max_norm == 0.5 and not nets["true"].neurons[0].weight.any()
