"""NIR export and import: graph round trip through the file, the same spikes in this project, in snnTorch's importer
and in a direct computation of NIR's discrete dynamics; the refusals; the export command."""

import json
import os
import re
import subprocess
import sys
from functools import partial

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snn.architectures import MLP, SpikingCNN, SpikingMLP
from snn.neurons import IF, LIF, PLIF
from snn.nir_graph import NIRError, to_nir
from snn.nir_import import from_nir, load_nir
from snn.spike_stats import SpikeStats
from tests.conftest import ROOT, SIZES, train_tiny

T = 6


def spikes_in(shape, p=0.3, seed=0):
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p).float()


def random_net(kind: str):
    """Small reset=zero nets with weights scaled up so that every layer fires; dense products (sparse_input=never)
    sum in the same order as the imported nn.Linear, so the spikes can be compared bit for bit."""
    torch.manual_seed(0)
    if kind == "cnn":
        neuron = partial(LIF, beta=0.9, reset="zero")
        net = SpikingCNN(neuron, channels=[4, 8], hidden_size=16, pool="avg", sparse_input="never", **SIZES)
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)
            bn.bias.data.uniform_(-0.3, 0.3)
    else:
        neuron = {"lif": partial(LIF, beta=0.8), "plif": partial(PLIF, beta=0.87), "if": IF}[kind]
        neuron = partial(neuron, reset="zero", threshold=0.5)
        net = SpikingMLP(neuron, hidden_sizes=[40], readout="membrane", sparse_input="never", **SIZES)
    for p in net.parameters():
        p.data.mul_(2)
    return net.eval()


def test_written_graph_reads_back_the_same(tmp_path):
    net = random_net("plif")
    graph = to_nir(net, SIZES["input_shape"], metadata={"T": 25, "encoder": {"name": "rate", "gain": 1.0}})
    nir.write(tmp_path / "net.nir", graph)
    back = nir.read(tmp_path / "net.nir")
    assert back.edges == graph.edges
    assert [type(back.nodes[k]).__name__ for k in graph.nodes] == [
        "Input", "Flatten", "Affine", "LIF", "Affine", "LIF", "Output"
    ]  # fmt: skip
    for name, node in graph.nodes.items():
        for field in ("weight", "bias", "tau", "r", "v_leak", "v_threshold", "v_reset"):
            if hasattr(node, field):
                np.testing.assert_array_equal(getattr(back.nodes[name], field), getattr(node, field))
    assert graph.nodes["stage0_lif"].tau.shape == (40,)
    meta = back.metadata  # HDF5 keeps the graph's metadata: no sidecar file needed
    assert (meta["readout"], meta["T"], meta["encoder"]["name"], meta["dt"]) == ("membrane", 25, "rate", 1e-4)


@pytest.mark.parametrize("kind", ["lif", "plif", "if", "cnn"])
def test_imported_graph_runs_like_the_original(tmp_path, kind):
    net = random_net(kind)
    nir.write(tmp_path / "net.nir", to_nir(net, SIZES["input_shape"]))
    back, info = load_nir(tmp_path / "net.nir")
    for ours, theirs in zip(net.neurons, back.neurons):  # beta survives tau = dt / (1 - beta) in float32
        assert torch.as_tensor(ours.beta).detach().float() == torch.as_tensor(theirs.beta).float()
    x = spikes_in((T, 8, 1, 28, 28))
    with torch.no_grad():
        (logits, trace), (logits_back, trace_back) = net(x, trace=True), back(x, trace=True)
    assert all(s.sum() > 0 for s in trace.spikes)
    if kind == "cnn":  # BatchNorm folded into the weights: equal up to float rounding
        for a, b in zip(trace.spikes, trace_back.spikes):
            assert (a != b).float().mean() < 1e-3
        assert torch.allclose(logits, logits_back, atol=1e-4)
    else:
        assert all(torch.equal(a, b) for a, b in zip(trace.spikes, trace_back.spikes))
        assert torch.equal(logits, logits_back)
    stats, stats_back = SpikeStats(net), SpikeStats(back)  # the imported net serves the project's statistics
    stats.update(trace), stats_back.update(trace_back)
    assert stats_back.compute() == pytest.approx(stats.compute(), rel=1e-3)
    assert info["readout"] == net.readout and info["input_shape"] == [1, 28, 28]


@pytest.mark.parametrize("kind", ["lif", "plif", "cnn"])
def test_snntorch_importer_gives_the_same_spikes(kind):
    pytest.importorskip("nirtorch")
    from snntorch.import_nir import import_from_nir
    from snntorch.utils import reset

    net = random_net(kind)
    imported = import_from_nir(to_nir(net, SIZES["input_shape"]))
    x = spikes_in((T, 3, 1, 28, 28), seed=1)
    with torch.no_grad():
        _, trace = net(x, trace=True)
        for i in range(x.shape[1]):  # one sample at a time: snnTorch's Flatten(0) also flattens the batch dimension
            reset(imported)
            state, output = None, []
            for t in range(T):  # snnTorch's modules step once per call and keep their membranes
                spikes, state = imported(x[t, i : i + 1], state)
                output.append(spikes)
            assert torch.equal(torch.stack(output).view(T, -1), trace.spikes[-1][:, i])
    assert trace.spikes[-1].sum() > 0


def nir_lif(tau, r, threshold, n, **changes):
    full = partial(np.full, n)
    params = {"tau": full(tau), "r": full(r), "v_leak": full(0.0), "v_threshold": full(threshold), "v_reset": full(0.0)}
    return nir.LIF(**{**params, **changes})


def test_hand_built_graph_against_nir_dynamics():
    """Input -> Affine -> LIF -> Affine -> IF -> Affine -> LI -> Output, against a plain loop over NIR's
    discretised dynamics: v <- (1 - dt/tau) v + (r dt/tau) I (IF: v <- v + r I), spike when v > v_threshold,
    then v <- v_reset = 0."""
    rng = np.random.default_rng(0)
    sizes, dt = [6, 5, 4, 3], 1e-4
    weights = [rng.normal(0, 1.5, (b, a)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(0, 0.3, b).astype(np.float32) for b in sizes[1:]]
    tau = 5e-4  # beta = 0.8
    neurons = [
        nir_lif(tau, tau / dt, 0.7, 5),  # input gain 1
        nir.IF(r=np.full(4, 2.0), v_threshold=np.full(4, 1.2), v_reset=np.zeros(4)),  # input gain 2
        nir.LI(tau=np.full(3, tau), r=np.full(3, 0.5 * tau / dt), v_leak=np.zeros(3)),  # gain 0.5: the readout
    ]
    affines = [nir.Affine(weight=w, bias=b) for w, b in zip(weights, biases)]
    graph = nir.NIRGraph.from_list([node for pair in zip(affines, neurons) for node in pair])
    net = from_nir(graph)
    assert net.readout == "membrane"

    x = spikes_in((T, 7, 6), p=0.5)
    h, leaky, gains = x, [True, False, True], [1.0, 2.0, 0.5]  # gains: powers of 2, exact on the weights
    for w, b, leaks, gain, threshold in zip(weights, biases, leaky, gains, [0.7, 1.2, float("inf")]):
        beta = torch.tensor(1 - dt / tau if leaks else 1.0).float()
        current = F.linear(h, torch.from_numpy(w) * gain, torch.from_numpy(b) * gain)
        v, out = torch.zeros(h.shape[1], w.shape[0]), []
        for t in range(T):
            v = v * beta + current[t]
            spikes = (v > threshold).float()
            out.append(v if threshold == float("inf") else spikes)
            v = v * (1 - spikes)
        h = torch.stack(out)
    with torch.no_grad():
        logits, trace = net(x, trace=True)
    assert trace.spikes[0].sum() > 0 and trace.spikes[1].sum() > 0
    assert torch.equal(trace.membrane, h)
    assert torch.allclose(logits, h.mean(0))


def chain_graph(*nodes, edges=None):
    graph = nir.NIRGraph.from_list(list(nodes))
    if edges is not None:
        graph = nir.NIRGraph(nodes=graph.nodes, edges=edges(graph.edges), type_check=False)
    return graph


AFFINE = nir.Affine(weight=np.ones((3, 3), dtype=np.float32), bias=np.zeros(3, dtype=np.float32))
LIF3 = partial(nir_lif, 1e-3, 10.0, 1.0, 3)
LI3 = nir.LI(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3))
CUBA = ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold")


@pytest.mark.parametrize(
    "graph,message",
    [
        (lambda: chain_graph(AFFINE, LIF3(v_leak=np.full(3, 0.2))), "v_leak=0.2 is not"),
        (lambda: chain_graph(AFFINE, LIF3(v_reset=np.full(3, -1.0))), "v_reset=-1 is not"),
        (lambda: chain_graph(AFFINE, LIF3(v_threshold=np.arange(1.0, 4))), "v_threshold varies across"),
        (lambda: chain_graph(AFFINE, nir.CubaLIF(**{k: np.ones(3) for k in CUBA})), "v_leak=1 is not"),
        (lambda: chain_graph(AFFINE, nir.Threshold(threshold=np.ones(3))), "is Threshold, which cannot"),
        (lambda: chain_graph(AFFINE, LIF3(), edges=lambda e: e + [("lif", "affine")]), "closes a loop"),
        (lambda: chain_graph(AFFINE, LI3, AFFINE, LIF3()), "only supported as the last node"),
        (lambda: chain_graph(AFFINE, LIF3(), AFFINE), "must be a neuron"),
    ],
)
def test_graphs_that_cannot_be_imported_exactly(graph, message):
    with pytest.raises(NIRError, match=message) as error:
        from_nir(graph())
    assert "\n" not in str(error.value)


RESET = r"it was trained with neuron.reset=subtract and NIR neurons reset to zero \(v_reset\)"
MAX_POOL = r"it max-pools \(model.pool=max\) and NIR has no max-pooling node"


@pytest.mark.parametrize(
    "reset,pool,message",
    [
        ("subtract", "avg", f"{RESET}; train with neuron.reset=zero to export"),
        ("zero", "max", f"{MAX_POOL}; train with model.pool=avg to export"),
        ("subtract", "max", f"{RESET}; {MAX_POOL}; train with neuron.reset=zero model.pool=avg to export"),
    ],
)
def test_models_that_cannot_be_exported_exactly(reset, pool, message):
    net = SpikingCNN(partial(LIF, reset=reset), channels=[4, 8], hidden_size=8, pool=pool, **SIZES)
    with pytest.raises(NIRError, match=f"^the network cannot be exported exactly: {message}$"):
        to_nir(net, SIZES["input_shape"])
    with pytest.raises(NIRError, match="MLP is not a spiking network"):
        to_nir(MLP(**SIZES), SIZES["input_shape"])


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(NIRError, match=r"missing.nir: no such NIR file"):
        load_nir(tmp_path / "missing.nir")
    (tmp_path / "junk.nir").write_bytes(b"not hdf5")
    with pytest.raises(NIRError, match=r"junk.nir: not a readable NIR file"):
        load_nir(tmp_path / "junk.nir")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, mnist_root):
    run = train_tiny(
        tmp_path_factory.mktemp("run"),
        mnist_root,
        "T=3",
        "model.hidden_sizes=[16]",
        "trainer.max_epochs=1",
        "neuron.reset=zero",
    )
    return run / "checkpoints" / "best.ckpt"


def test_export_command(checkpoint, capsys):
    from snn.evaluation import load_classifier
    from snn.export import main

    done = subprocess.run(
        [sys.executable, "-m", "snn.export", f"ckpt={checkpoint}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    written = checkpoint.parent.parent / "export" / "best.nir"
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(written)
    net, info = load_nir(written)
    assert (info["metadata"]["T"], info["metadata"]["encoder"]["name"], info["readout"]) == (3, "rate", "spike_count")
    module, _ = load_classifier(checkpoint)
    x = spikes_in((3, 4, 1, 28, 28), p=0.5)  # denser than sparse_input=auto's 40 %: dense products, as imported
    with torch.no_grad():
        assert torch.equal(net(x), module.net(x))

    with pytest.raises(SystemExit, match=r"^error: .*best.nir exists; not overwritten \(pass overwrite=true"):
        main([f"ckpt={checkpoint}"])
    main([f"ckpt={checkpoint}", "overwrite=true"])
    assert capsys.readouterr().out.strip() == str(written)
    with pytest.raises(SystemExit, match=r"^error: unknown argument 'T=5'"):
        main([f"ckpt={checkpoint}", "T=5"])


def test_export_command_refuses_a_layer_with_other_dynamics(checkpoint, monkeypatch, tmp_path):
    """A LIF subclass that overrides `run` (snn/spiking_layer.py's contract) is not exported as a plain LIF."""
    import snn.evaluation
    from snn.export import main
    from tests.test_spiking_layer import OtherDynamics

    def load(path, config_folders=(), load=snn.evaluation.load_classifier):  # its neurons' dynamics changed
        module, cfg = load(path, config_folders=config_folders)
        for neuron in module.net.neurons:
            neuron.__class__ = OtherDynamics
        return module, cfg

    monkeypatch.setattr(snn.evaluation, "load_classifier", load)
    message = "OtherDynamics has no NIR node: it defines no nir_node for its own dynamics, so it cannot be exported"
    with pytest.raises(SystemExit, match=f"^error: {re.escape(str(checkpoint))}: {message}$"):
        main([f"ckpt={checkpoint}", f"out={tmp_path / 'other.nir'}"])
    assert not (tmp_path / "other.nir").exists()


@pytest.mark.slow
def test_evaluate_a_hand_built_graph_on_the_test_set(tmp_path, mnist_root):
    """evaluate.py ckpt=<file>.nir encoder=direct T=4: the accuracy, loss and firing rate of a direct computation."""
    from snn.data import load_mnist

    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(0, 0.1, (16, 784)).astype(np.float32), rng.normal(0, 0.1, 16).astype(np.float32)
    w2, b2 = rng.normal(0, 1.0, (10, 16)).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32)
    tau = 5e-4  # beta = 0.8, input gain 1
    graph = nir.NIRGraph.from_list(
        [
            nir.Flatten(input_type={"input": np.array([1, 28, 28])}, start_dim=0),
            nir.Affine(weight=w1, bias=b1),
            nir_lif(tau, tau / 1e-4, 0.5, 16),
            nir.Affine(weight=w2, bias=b2),
            nir.LI(tau=np.full(10, tau), r=np.full(10, tau / 1e-4), v_leak=np.zeros(10)),
        ]
    )
    nir.write(tmp_path / "hand.nir", graph)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SNN_DATA_DIR": str(mnist_root)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), f"ckpt={tmp_path / 'hand.nir'}", "encoder=direct", "T=4"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (out,) = (tmp_path / "outputs" / "eval").iterdir()
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["model"], metrics["encoder"], metrics["T"], metrics["repeats"]) == ("nir", "direct", 4, 1)

    images, labels = load_mnist(mnist_root, train=False)
    current = images.flatten(1) @ torch.from_numpy(w1).T + torch.from_numpy(b1)
    v, hidden, out_v, outputs = torch.zeros_like(current), [], torch.zeros(len(labels), 10), []
    for _ in range(4):
        v = 0.8 * v + current
        spikes = (v > 0.5).float()
        v = v * (1 - spikes)
        out_v = 0.8 * out_v + spikes @ torch.from_numpy(w2).T + torch.from_numpy(b2)
        hidden.append(spikes)
        outputs.append(out_v)
    logits = torch.stack(outputs).mean(0)
    assert torch.stack(hidden).sum() > 0
    assert metrics["test/acc"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert metrics["test/loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-4)
    assert metrics["test/firing_rate/layer1"] == pytest.approx(float(torch.stack(hidden).mean()), rel=1e-5)
