"""Recurrent layers in NIR: exported as a cycle neuron -> Linear -> neuron in the graph, read back as the same
Recurrent layer with identical outputs; every other loop refused with one line, in bounded time."""

import random
import subprocess
import sys
from functools import partial

import nir
import numpy as np
import pytest
import torch

from snn.alif import ALIF
from snn.architectures import SpikingMLP
from snn.neurons import IF, LIF
from snn.nir_graph import NIRError, to_nir
from snn.nir_import import from_nir, load_nir
from snn.recurrent import Recurrent
from snn.synaptic import Synaptic
from tests.conftest import ROOT, SIZES, train_tiny
from tests.test_nir import AFFINE, LI3, LIF3, spikes_in

NEURONS = {
    "lif": partial(LIF, beta=0.8, reset="zero", threshold=0.5),
    "if": partial(IF, reset="zero", threshold=0.5),
    "synaptic": partial(Synaptic, alpha=0.7, beta=0.8, reset="zero_leaky", threshold=0.5),
}


def recurrent_net(kind: str, hidden=(20, 12)):
    torch.manual_seed(0)
    net = SpikingMLP(NEURONS[kind], hidden_sizes=list(hidden), recurrent=True, readout="membrane",
                     sparse_input="never", **SIZES)  # fmt: skip
    for p in net.parameters():  # every layer fires, the recurrent weights matter
        p.data.mul_(2)
    return net.eval()


@pytest.mark.parametrize("kind", ["lif", "if", "synaptic"])
def test_recurrent_layers_export_as_a_cycle_and_read_back_the_same(tmp_path, kind):
    net = recurrent_net(kind)
    graph = to_nir(net, SIZES["input_shape"])
    node = {"lif": "lif", "if": "if", "synaptic": "cubalif"}[kind]
    for i in (0, 1):  # each hidden layer: its neuron feeds its rec weight, which feeds it back
        assert {(f"stage{i}_{node}", f"stage{i}_rec"), (f"stage{i}_rec", f"stage{i}_{node}")} <= set(graph.edges)
        assert isinstance(graph.nodes[f"stage{i}_rec"], nir.Linear)
        np.testing.assert_array_equal(graph.nodes[f"stage{i}_rec"].weight, net.neurons[i].weight.detach().numpy())
    assert "stage2_rec" not in graph.nodes  # the output layer is feed-forward
    nir.write(tmp_path / "rsnn.nir", graph)
    back, info = load_nir(tmp_path / "rsnn.nir")
    assert info["recurrent"] == {f"stage0_{node}": "stage0_rec", f"stage1_{node}": "stage1_rec"}
    assert [type(n).__name__ for n in back.neurons] == ["Recurrent", "Recurrent", type(net.neurons[-1]).__name__]
    x = spikes_in((12, 5, 1, 28, 28))
    with torch.no_grad():
        (logits, trace), (logits_back, trace_back) = net(x, trace=True), back(x, trace=True)
    assert all(0 < s.mean() < 1 for s in trace.spikes)
    assert all(torch.equal(a, b) for a, b in zip(trace.spikes, trace_back.spikes))
    assert torch.equal(logits, logits_back)
    feed_forward = recurrent_net(kind)
    for layer in feed_forward.neurons[:2]:
        layer.weight.data.zero_()
    assert not torch.equal(feed_forward(x), logits)  # the cycle carries the recurrence: without it, other outputs


def test_what_recurrent_layers_refuse_to_export():
    alif = SpikingMLP(partial(ALIF, reset="zero"), hidden_sizes=[8], recurrent=True, **SIZES)
    message = "^ALIF has no NIR node: NIR has no adaptive-threshold neuron, so neuron=alif cannot be exported$"
    with pytest.raises(NIRError, match=message):
        to_nir(alif, SIZES["input_shape"])
    subtract = SpikingMLP(partial(LIF, reset="subtract"), hidden_sizes=[8], recurrent=True, **SIZES)
    with pytest.raises(NIRError, match=r"neuron.reset=subtract .*; train with neuron.reset=zero to export$"):
        to_nir(subtract, SIZES["input_shape"])
    layer = Recurrent(partial(LIF, reset="zero"), shape=(2, 3))
    with pytest.raises(NIRError, match=r"^Recurrent of shape \(2, 3\) has no NIR node: NIR's Linear maps flat"):
        layer.nir_node(1e-4)


def rec(n=3, **changes):
    return nir.Linear(weight=changes.get("weight", np.eye(n, dtype=np.float32)))


def graph_of(nodes: dict, edges: list):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def chain_with(extra_nodes: dict, extra_edges: list, lif=None):
    """Input -> affine -> lif -> Output, plus nodes and edges."""
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}), "affine": AFFINE, "lif": lif or LIF3(),
             "output": nir.Output(output_type={"output": np.array([3])}), **extra_nodes}  # fmt: skip
    return graph_of(nodes, [("input", "affine"), ("affine", "lif"), ("lif", "output"), *extra_edges])


LOOP = "which is not a recurrent connection; a recurrent connection is a spiking neuron"


@pytest.mark.parametrize(
    "graph,message",
    [
        (lambda: chain_with({}, [("lif", "lif")]), r"^node 'lif' feeds itself \(an edge from a node to itself\)"),
        (lambda: chain_with({"a": rec(), "b": rec()}, [("lif", "a"), ("a", "b"), ("b", "lif")]),
         f"^node 'lif' is on the loop lif -> a -> b -> lif, {LOOP}"),
        (lambda: chain_with({"a": rec(), "b": rec()}, [("lif", "a"), ("a", "b"), ("b", "a")]),
         "^node 'a' closes a loop with 'b' but has other edges too"),
        (lambda: chain_with({"a": rec(), "b": rec()}, [("a", "b"), ("b", "a")]),
         r"^node 'a' feeds node 'b', a Linear, back into itself"),
        (lambda: chain_with({}, [("lif", "affine")]), "^node 'affine' closes a loop with 'lif' but has other edges"),
        (lambda: chain_with({"r": rec()}, [("lif", "r"), ("r", "lif")], lif=LI3), "'r' feeds node 'lif', a LI, back"),
        (lambda: chain_with({"r": rec(4)}, [("lif", "r"), ("r", "lif")]),
         r"^node 'r': a recurrent weight of shape \[4, 4\] does not fit the 3 neurons of 'lif'$"),
        (lambda: chain_with({"r": rec(weight=np.ones((3, 2)))}, [("lif", "r"), ("r", "lif")]),
         r"^node 'r': a recurrent weight of shape \[3, 2\] is not square \[n, n\]$"),
        (lambda: chain_with({"r": nir.Affine(weight=np.eye(3), bias=np.ones(3))}, [("lif", "r"), ("r", "lif")]),
         "^node 'r': a recurrent Affine with a non-zero bias is not supported"),
        (lambda: chain_with({"r": rec(), "s": rec()}, [("lif", "r"), ("r", "lif"), ("lif", "s"), ("s", "lif")]),
         r"^node 'lif' has two recurrent connections \('r', 's'\); one is supported$"),
        (lambda: chain_with({}, [("lif", "ghost")]), "^the edge 'lif' -> 'ghost' names a node the graph does not have"),
        (lambda: graph_of({"input": nir.Input(input_type={"input": np.array([3])}), "output": nir.Output(
            output_type={"output": np.array([3])})}, [("input", "output"), ("output", "input")]),
         "^node 'input' is on the loop input -> output -> input"),
    ],
)
def test_loops_that_are_not_a_recurrent_connection_are_refused(graph, message):
    with pytest.raises(NIRError, match=message) as error:
        from_nir(graph())
    assert "\n" not in str(error.value)


def test_a_recurrent_weight_that_does_not_fit_the_layer_is_refused():
    """Scalar neuron parameters (as snnTorch writes them) say nothing of the layer's size: the stage's shape does."""
    lif = nir.LIF(tau=np.array(1e-3), r=np.array(10.0), v_leak=np.array(0.0), v_threshold=np.array(1.0),
                  v_reset=np.array(0.0))  # fmt: skip
    with pytest.raises(NIRError, match=r"^node 'r': a recurrent weight of shape \[4, 4\] does not fit the neurons of "):
        from_nir(chain_with({"r": rec(4)}, [("lif", "r"), ("r", "lif")], lif=lif))


def test_arbitrary_wiring_is_refused_in_bounded_time():
    """Random graphs of many nodes and edges, loops everywhere: always one line, never an endless walk."""
    rng = random.Random(0)
    for trial in range(200):
        names = [f"n{i}" for i in range(40)]
        kinds = [AFFINE, LIF3(), rec(), LI3]
        nodes = {name: rng.choice(kinds) for name in names}
        nodes["n0"], nodes["n39"] = nir.Input(input_type={"input": np.array([3])}), nir.Output(
            output_type={"output": np.array([3])})  # fmt: skip
        edges = list({(rng.choice(names), rng.choice(names)) for _ in range(rng.randint(1, 120))})
        with pytest.raises(NIRError) as error:
            from_nir(graph_of(nodes, edges))
        assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def rsnn_checkpoint(tmp_path_factory, mnist_root):
    run = train_tiny(tmp_path_factory.mktemp("rsnn"), mnist_root, "model=rsnn", "T=4", "model.hidden_sizes=[16]",
                     "model.readout_steps=null", "neuron.reset=zero", "trainer.max_epochs=1")  # fmt: skip
    return run / "checkpoints" / "best.ckpt"


def test_trained_rsnn_exports_with_the_command_and_reads_back_the_same(rsnn_checkpoint):
    from snn.evaluation import load_classifier

    done = subprocess.run([sys.executable, "-m", "snn.export", f"ckpt={rsnn_checkpoint}"], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    net, info = load_nir(done.stdout.strip())
    assert info["recurrent"] == {"stage0_lif": "stage0_rec"} and info["metadata"]["model"] == "rsnn"
    module, _ = load_classifier(rsnn_checkpoint)
    x = spikes_in((4, 6, 1, 28, 28), p=0.5)  # denser than sparse_input=auto's 40 %: dense products, as imported
    with torch.no_grad():
        (logits, trace), (logits_back, trace_back) = module.net(x, trace=True), net(x, trace=True)
    assert trace.spikes[0].sum() > 0
    assert all(torch.equal(a, b) for a, b in zip(trace.spikes, trace_back.spikes))
    assert torch.equal(logits, logits_back) and net.readout == module.net.readout == "membrane"


def test_snntorch_nested_form_reads_back_the_same():
    """snnTorch's export writes a recurrent layer as one subgraph node (input -> lif -> output, lif -> w_rec -> lif),
    which is what Recurrent.nir_node gives: a graph holding it reads back as the exported cycle does."""
    net = recurrent_net("lif", hidden=(20,))
    flat = to_nir(net, SIZES["input_shape"])
    nodes = {k: v for k, v in flat.nodes.items() if k not in ("stage0_lif", "stage0_rec")}
    nodes["rlif"] = net.neurons[0].nir_node(1e-4)
    assert isinstance(nodes["rlif"], nir.NIRGraph) and ("input", "lif") in nodes["rlif"].edges
    renamed = {"stage0_lif": "rlif"}
    edges = [(renamed.get(a, a), renamed.get(b, b)) for a, b in flat.edges if "stage0_rec" not in (a, b)]
    nested = nir.NIRGraph(nodes=nodes, edges=edges, metadata=flat.metadata, type_check=False)
    x = spikes_in((10, 4, 1, 28, 28))
    with torch.no_grad():
        assert torch.equal(from_nir(nested)(x), net(x))
    nodes["rlif"].edges.append(("input", "rec"))  # two ways in: not a chain
    with pytest.raises(NIRError, match="^node 'rlif' is a subgraph that is not one Input -> ... -> one Output"):
        from_nir(nested)
    nodes["rlif"].edges.remove(("input", "lif"))  # W (I[t] + s[t-1]) (snnTorch's importer's wiring): not ours
    with pytest.raises(NIRError, match="^node 'rlif.rec' closes a loop with 'rlif.lif' but has other edges too"):
        from_nir(nested)
