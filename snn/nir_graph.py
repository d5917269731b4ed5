"""NIR (Neuromorphic Intermediate Representation) export of the spiking nets: `to_nir(net) -> nir.NIRGraph`.
Import, the other way: `snn.nir_import` (`from_nir`, `load_nir`).

The discretisation is snnTorch's (`snntorch.export_nir` / `snntorch.import_nir`), with dt = 1e-4 s per step:

    LIF (beta < 1):  tau = dt / (1 - beta), r = tau / dt (so the input gain r*dt/tau is 1), v_leak = 0
    IF (beta = 1):   r = 1 (NIR's IF has no tau: r is the per-step input gain; snnTorch's importer requires r = 1)
    both:            v_threshold = threshold, v_reset = 0

The NIR neurons reset to `v_reset`, this project's `neuron.reset=zero`; a `subtract` model is refused. BatchNorm
(running statistics, i.e. eval mode) is folded into the convolution before it. NIR has no max-pooling: only
`model.pool=avg` conv nets export. Per-neuron parameters are arrays shaped like the layer's output.

Each spiking layer says what its NIR node is (`nir_node(dt)`, snn/spiking_layer.py) or refuses; LIF, IF and PLIF
build theirs with `leaky_node` below. A recurrent layer (snn/recurrent.py) exports as a cycle in the graph:
... -> stage<i>_lif -> ..., stage<i>_lif -> stage<i>_rec (nir.Linear, its weight W) -> stage<i>_lif, the one-step
delay on the cycle implicit (the NIR paper's convention; snnTorch's RLeaky/RSynaptic). The node's input is the sum of
its two incoming edges: I[t] + W s[t-1].
"""

import nir
import numpy as np
import torch
from torch import nn

DT = 1e-4  # seconds per time step, snnTorch's NIR convention
SOURCE = "snn-mnist"
LOGITS = {  # how the network's logits are read off its output layer, stored in the graph's metadata
    "spike_count": "sum over the T steps of the output neurons' spikes",
    "membrane": "mean over the T steps of the output neurons' membrane potential before reset",
}


class NIRError(ValueError):
    """A network or a graph that cannot be converted exactly; the message is one line. `retrain`: the (problem,
    setting that fixes it) pairs when training with other settings would make the network exportable."""

    retrain: tuple[tuple[str, str], ...] = ()


RESET_SUBTRACT = (
    "it was trained with neuron.reset=subtract and NIR neurons reset to zero (v_reset)",
    "neuron.reset=zero",
)
INTEGRATOR = ("its output layer is a non-spiking integrator (model.readout=integrator)", "model.readout=membrane")
MAX_POOLING = ("it max-pools (model.pool=max) and NIR has no max-pooling node", "model.pool=avg")
LAST_STEPS = ("it reads its class from the last steps only (model.readout_steps) and NIR has no readout window",
              "model.readout_steps=null")  # fmt: skip


def must_retrain(*problems: tuple[str, str]) -> NIRError:
    problem, fix = "; ".join(p for p, _ in problems), " ".join(f for _, f in problems)
    error = NIRError(f"the network cannot be exported exactly: {problem}; train with {fix} to export")
    error.retrain = problems
    return error


def check_exportable(net: nn.Module, dt: float = DT) -> None:
    """Every reason that retraining with other settings fixes, at once, so that one retraining fixes them all."""
    problems = []
    for neuron in net.neurons:
        try:
            neuron.nir_node(dt)
        except NIRError as error:
            if not error.retrain:
                raise
            problems += [problem for problem in error.retrain if problem not in problems]
    if any(isinstance(module, nn.MaxPool2d) for module in net.modules()):
        problems.append(MAX_POOLING)
    if net.readout not in LOGITS:  # readout=integrator (a converted net): its output layer has no neuron to export
        problems.append(INTEGRATOR)
    if getattr(net, "readout_steps", None):
        problems.append(LAST_STEPS)
    if problems:
        raise must_retrain(*problems)


def _per_neuron(shape: tuple[int, ...], value: float) -> np.ndarray:
    # float64: 1 - dt / tau gives back the trained float32 beta exactly
    return np.full(shape, value, dtype=np.float64)


def leaky_node(beta: float, threshold: float, shape: tuple[int, ...], dt: float = DT) -> nir.NIRNode:
    """nir.LIF (nir.IF when beta = 1, nir.LI when the threshold is infinite: it never fires) for a layer of
    reset-to-zero LIF neurons of `shape` (LIF's nir_node, so IF's, PLIF's and LeakyIntegrator's too)."""
    if shape is None:
        raise NIRError("a neuron built without its shape has no NIR node (its parameters are arrays of that shape)")
    zeros, v_threshold = _per_neuron(shape, 0.0), _per_neuron(shape, threshold)
    if beta == 1:
        return nir.IF(r=_per_neuron(shape, 1.0), v_threshold=v_threshold, v_reset=zeros)
    tau = dt / (1 - beta)
    if np.isinf(threshold):
        return nir.LI(tau=_per_neuron(shape, tau), r=_per_neuron(shape, tau / dt), v_leak=zeros)
    return nir.LIF(
        tau=_per_neuron(shape, tau),
        r=_per_neuron(shape, tau / dt),
        v_leak=zeros,
        v_threshold=v_threshold,
        v_reset=zeros,
    )


def _pair(value) -> np.ndarray:
    return np.array(value if isinstance(value, (tuple, list)) else (value, value))


def _weights(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().float().numpy().copy()


def conv_node(conv: nn.Conv2d, batch_norm: nn.BatchNorm2d | None, shape: tuple[int, ...]) -> nir.Conv2d:
    """nir.Conv2d with the BatchNorm after it (running statistics) folded into its weight and bias."""
    if conv.padding_mode != "zeros":
        raise NIRError(f"cannot export a Conv2d with padding_mode={conv.padding_mode!r}: NIR pads with zeros")
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(conv.out_channels)
    if batch_norm is not None:
        if batch_norm.running_var is None:
            raise NIRError("cannot fold a BatchNorm2d without running statistics into its convolution")
        gamma = batch_norm.weight.detach().double() if batch_norm.affine else torch.ones_like(bias)
        shift = batch_norm.bias.detach().double() if batch_norm.affine else torch.zeros_like(bias)
        scale = gamma / torch.sqrt(batch_norm.running_var.double() + batch_norm.eps)
        weight, bias = weight * scale.view(-1, 1, 1, 1), (bias - batch_norm.running_mean.double()) * scale + shift
    padding = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
    return nir.Conv2d(
        input_shape=tuple(shape[1:]),
        weight=_weights(weight),
        stride=_pair(conv.stride),
        padding=padding,
        dilation=_pair(conv.dilation),
        groups=conv.groups,
        bias=_weights(bias),
    )


def pool_node(pool: nn.Module) -> nir.AvgPool2d:
    if isinstance(pool, nn.MaxPool2d):
        raise must_retrain(MAX_POOLING)
    if pool.ceil_mode or pool.divisor_override is not None or np.any(_pair(pool.padding) != 0):
        raise NIRError("only plain average pooling exports (no padding, ceil_mode or divisor_override)")
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return nir.AvgPool2d(kernel_size=_pair(pool.kernel_size), stride=_pair(stride), padding=_pair(0))


def layer_nodes(layers: list[nn.Module], shape: tuple[int, ...]) -> list[tuple[str, nir.NIRNode, tuple[int, ...]]]:
    """(name, node, output shape) for a stage's stateless layers, whose input has `shape` (no batch dimension)."""
    nodes = []
    for i, layer in enumerate(layers):
        following = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, nn.BatchNorm2d):
            if i == 0 or not isinstance(layers[i - 1], nn.Conv2d):
                raise NIRError("cannot export a BatchNorm2d that does not follow a Conv2d (nothing to fold it into)")
            continue  # folded into the convolution before it
        with torch.no_grad():  # the layers left (Linear, Conv2d, pooling, Flatten) act the same in train and eval
            out_shape = tuple(layer(torch.zeros(1, *shape))[0].shape)
        if isinstance(layer, nn.Linear):
            weight = _weights(layer.weight)
            node = nir.Affine(weight, _weights(layer.bias)) if layer.bias is not None else nir.Linear(weight)
            name = "affine"
        elif isinstance(layer, nn.Conv2d):
            node, name = conv_node(layer, following if isinstance(following, nn.BatchNorm2d) else None, shape), "conv"
        elif isinstance(layer, (nn.AvgPool2d, nn.MaxPool2d)):
            node, name = pool_node(layer), "avgpool"
        elif isinstance(layer, nn.Flatten) and out_shape == shape:
            continue  # already flat (the MLP flattens at every stage): nothing to say in the graph
        elif isinstance(layer, nn.Flatten):  # NIR shapes have no batch dimension: torch's dims shift down by one
            start, end = (d - 1 if d > 0 else d for d in (layer.start_dim, layer.end_dim))
            node, name = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start, end_dim=end), "flatten"
        else:
            raise NIRError(f"cannot export the layer {type(layer).__name__}: it has no NIR counterpart here")
        nodes.append((name, node, out_shape))
        shape = out_shape
    return nodes


def _unique(nodes: dict, name: str) -> str:
    return name if name not in nodes else f"{name}_{sum(key.startswith(name) for key in nodes)}"


def _inline(nodes: dict, edges: list, last: str, graph: nir.NIRGraph, prefix: str) -> str:
    """Puts a layer's subgraph (Recurrent's: input -> neuron -> output and neuron -> rec -> neuron) into the graph
    itself, its nodes named `<prefix>_<name>`, what its Input feeds fed by `last`; returns what feeds its Output."""
    names = {}
    for key, node in graph.nodes.items():
        if not isinstance(node, (nir.Input, nir.Output)):
            names[key] = _unique(nodes, f"{prefix}_{key}")
            nodes[names[key]] = node
    out = last
    for a, b in graph.edges:
        if a in names and b in names:
            edges.append((names[a], names[b]))
        elif b in names:  # from the subgraph's Input
            edges.append((last, names[b]))
        elif a in names:  # to its Output
            out = names[a]
    return out


def to_nir(net: nn.Module, input_shape: tuple[int, ...], metadata: dict | None = None, dt: float = DT) -> nir.NIRGraph:
    """The NIR graph of a SpikingNet (as in eval mode): Input -> per stage its layers and its neuron -> Output.
    `input_shape`: one sample's, `[C, H, W]`, as the data module the net was trained on says (snn/data.py).
    `metadata` (T, encoder, ...) is stored in the graph beside the source, dt and the readout. Each stage's neuron
    gives its own node (`nir_node`, snn/spiking_layer.py); a recurrent layer's subgraph is inlined, so that its
    cycle `stage<i>_lif -> stage<i>_rec -> stage<i>_lif` lies in the graph itself (the NIR paper's convention;
    snnTorch 1.0's importer reads it, as W (I + s[t-1]): docs/nir.md)."""
    if not getattr(net, "spiking", False) or not hasattr(net, "stages"):
        raise NIRError(f"{type(net).__name__} is not a spiking network: only spiking models export to NIR")
    check_exportable(net, dt)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(input_shape))}
    edges, last, shape = [], "input", tuple(input_shape)

    def add(name: str, node: nir.NIRNode) -> str:
        name = _unique(nodes, name)
        nodes[name] = node
        edges.append((last, name))
        return name

    for i, (stage, neuron) in enumerate(zip(net.stages, net.neurons)):
        layers = list(stage) if isinstance(stage, nn.Sequential) else [stage]
        for name, node, out_shape in layer_nodes(layers, shape):
            last, shape = add(f"stage{i}_{name}", node), out_shape
        if neuron.shape != shape:
            raise NIRError(f"stage {i}: its neuron's shape {neuron.shape} is not its layers' output shape {shape}")
        node = neuron.nir_node(dt)
        if isinstance(node, nir.NIRGraph):
            last = _inline(nodes, edges, last, node, f"stage{i}")
        else:
            last = add(f"stage{i}_{type(node).__name__.lower()}", node)
    add("output", nir.Output(output_type=np.array(shape)))
    metadata = {"source": SOURCE, "dt": dt, "readout": net.readout, "logits": LOGITS[net.readout], **(metadata or {})}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
