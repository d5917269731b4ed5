"""NIR import: `from_nir(graph)` builds a SpikingNet from a NIR graph made here or elsewhere, `load_nir(path)` reads
a .nir file (HDF5, data only) and builds it.

Linear chains Input -> ... -> Output of Affine, Linear, Conv2d, AvgPool2d, SumPool2d, Flatten, LIF, IF, LI and
CubaLIF nodes. Each neuron closes a stage of the stateless layers before it. A spiking neuron on a
cycle neuron -> Linear [n, n] -> neuron (snn/nir_chain.py) is a `Recurrent` layer around it, I[t] + W s[t-1].
The mapping is snnTorch's importer's, with dt from the graph's metadata (else 1e-4 s):

    LIF:  beta = 1 - dt / tau, input gain r * dt / tau       IF: beta = 1, input gain r (per step)
    LI:   as LIF without spikes (threshold +inf); as the last node it makes the readout the membrane
    CubaLIF: Synaptic(reset=zero_leaky), alpha = 1 - dt / tau_syn, beta = 1 - dt / tau_mem,
          input gain w_in * dt / tau_syn * r * dt / tau_mem

An input gain other than 1 is folded into the weights and bias of the layer before the neuron (exact up to float
rounding; snnTorch divides the threshold by it instead, which gives the same spikes but a scaled membrane).
Refused with one line: v_leak != 0, v_reset != 0, parameters that vary across the neurons of a layer (this
project's neurons take one value per layer), branches, merges, any other loop and any other node type.
"""

from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from snn.architectures import READOUTS, SpikingNet
from snn.neurons import IF, LIF
from snn.nir_chain import LAYERS, chain, inline_subgraphs
from snn.nir_checks import check_declared_sizes, check_finite, stored_data, stored_encoder, stored_T
from snn.nir_graph import DT, NIRError, leaky_node
from snn.recurrent import Recurrent
from snn.spiking_layer import SpikingLayer
from snn.synaptic import Synaptic


class LeakyIntegrator(LIF):
    """NIR's LI: a LIF that never fires (threshold +inf), so its membrane integrates with leak and no reset."""

    def __init__(self, beta: float, *, shape: tuple[int, ...] | None = None):
        super().__init__(beta, threshold=float("inf"), reset="zero", shape=shape)

    def nir_node(self, dt: float) -> nir.LI:
        return leaky_node(float(self.beta), self.threshold, self.shape, dt)  # an infinite threshold: nir.LI


class NIRNet(SpikingNet):
    """A SpikingNet whose stages each have their own neuron, as read from a NIR graph."""

    def __init__(self, stages: list[nn.Module], neurons: list, readout: str, input_shape: tuple):
        handed = iter(neurons)

        def factory(shape: tuple[int, ...]) -> SpikingLayer:  # hands out one neuron per stage, in order
            neuron = next(handed)
            if not isinstance(neuron, SpikingLayer):  # a recurrent layer, sized by its stage's shape
                return neuron(shape)
            neuron.shape = shape  # read from the graph before its stage's output shape was known
            return neuron

        super().__init__(stages, factory, readout, input_shape)


def _uniform(name: str, node: nir.NIRNode, field: str) -> float:
    values = np.asarray(getattr(node, field), dtype=np.float64)
    if values.size == 0 or not np.all(values == values.flat[0]):
        raise NIRError(f"node {name!r}: {field} varies across neurons; this project's neurons take one value per layer")
    return float(values.flat[0])


def neuron(name: str, node: nir.NIRNode, dt: float) -> tuple[nn.Module, float]:
    """(this project's neuron, input gain) for a NIR LIF / IF / LI / CubaLIF node."""
    for field in ("v_leak", "v_reset"):
        if hasattr(node, field) and _uniform(name, node, field) != 0:
            raise NIRError(
                f"node {name!r}: {field}={_uniform(name, node, field):g} is not supported (this project's neurons "
                "leak towards 0 and reset to 0)"
            )
    r = _uniform(name, node, "r")
    if isinstance(node, nir.CubaLIF):
        return cuba_neuron(name, node, dt, r)
    if isinstance(node, nir.IF):
        threshold, beta, gain = _uniform(name, node, "v_threshold"), 1.0, r
    else:
        tau = _uniform(name, node, "tau")
        beta, gain = 1 - dt / tau, r * dt / tau
        threshold = float("inf") if isinstance(node, nir.LI) else _uniform(name, node, "v_threshold")
        if not 0 < beta <= 1:
            raise NIRError(f"node {name!r}: tau={tau:g} s at dt={dt:g} s gives beta={beta:g}, outside (0, 1]")
    if not threshold > 0:
        raise NIRError(f"node {name!r}: v_threshold={threshold:g} is not allowed: this project needs a threshold > 0")
    gain = 1.0 if np.isclose(gain, 1.0, rtol=1e-9, atol=0) else gain  # tau / dt * dt / tau: 1 up to rounding
    if isinstance(node, nir.LI):
        return LeakyIntegrator(beta), gain
    return (IF(threshold, reset="zero") if beta == 1 else LIF(beta, threshold, reset="zero")), gain


def cuba_neuron(name: str, node: nir.CubaLIF, dt: float, r: float) -> tuple[Synaptic, float]:
    """(Synaptic(reset=zero_leaky), input gain) for a CubaLIF node (v_leak and v_reset already checked to be 0)."""
    tau_syn, tau_mem = _uniform(name, node, "tau_syn"), _uniform(name, node, "tau_mem")
    alpha, beta = 1 - dt / tau_syn, 1 - dt / tau_mem
    for key, tau, decay in (("tau_syn", tau_syn, alpha), ("tau_mem", tau_mem, beta)):
        if not 0 <= decay < 1:
            raise NIRError(f"node {name!r}: {key}={tau:g} s at dt={dt:g} s gives a decay of {decay:g}, outside [0, 1)")
    threshold = _uniform(name, node, "v_threshold")
    if not threshold > 0:
        raise NIRError(f"node {name!r}: v_threshold={threshold:g} is not allowed: this project needs a threshold > 0")
    gain = _uniform(name, node, "w_in") * dt / tau_syn * r * dt / tau_mem
    gain = 1.0 if np.isclose(gain, 1.0, rtol=1e-9, atol=0) else gain  # tau / dt * dt / tau: 1 up to rounding
    return Synaptic(alpha, beta, threshold, reset="zero_leaky"), gain


def _ints(value, name: str, what: str) -> tuple[int, ...]:
    values = np.atleast_1d(np.asarray(value)).astype(np.int64).tolist()
    if len(values) not in (1, 2):
        raise NIRError(f"node {name!r}: {what}={value} is not one or two integers")
    return tuple(values * 2 if len(values) == 1 else values)


def _tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


def layer(name: str, node: nir.NIRNode) -> nn.Module:
    """The stateless torch layer of a NIR Affine / Linear / Conv2d / pooling / Flatten node, weights copied."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = _tensor(node.weight)
        if weight.dim() != 2:
            raise NIRError(f"node {name!r}: weight of shape {tuple(weight.shape)} is not a matrix")
        module = nn.Linear(weight.shape[1], weight.shape[0], bias=isinstance(node, nir.Affine))
    elif isinstance(node, nir.Conv2d):
        weight = _tensor(node.weight)
        if weight.dim() != 4:
            raise NIRError(f"node {name!r}: weight of shape {tuple(weight.shape)} is not [C_out, C_in, kH, kW]")
        padding = node.padding if isinstance(node.padding, str) else _ints(node.padding, name, "padding")
        groups = int(np.asarray(node.groups))
        module = nn.Conv2d(
            weight.shape[1] * groups,
            weight.shape[0],
            tuple(weight.shape[2:]),
            stride=_ints(node.stride, name, "stride"),
            padding=padding,
            dilation=_ints(node.dilation, name, "dilation"),
            groups=groups,
        )
    elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        if any(_ints(node.padding, name, "padding")):
            raise NIRError(f"node {name!r}: padded pooling is not supported (whether pads count is not defined)")
        kernel, stride = _ints(node.kernel_size, name, "kernel_size"), _ints(node.stride, name, "stride")
        summing = isinstance(node, nir.SumPool2d)  # a sum is an average that divides by 1
        return nn.AvgPool2d(kernel, stride, divisor_override=1 if summing else None)
    else:  # Flatten: NIR's dims leave out the batch, torch's count it
        start, end = (int(d) + 1 if int(d) >= 0 else int(d) for d in (node.start_dim, node.end_dim))
        return nn.Flatten(start, end)
    with torch.no_grad():
        module.weight.copy_(weight)
        if module.bias is not None:
            module.bias.copy_(_tensor(node.bias))
    return module


def _fold_gain(name: str, layers: list[nn.Module], gain: float) -> None:
    """Scale the last weighted layer of a stage by the neuron's input gain: the layers after it are linear."""
    weighted = [m for m in layers if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not weighted:
        raise NIRError(f"node {name!r}: input gain {gain:g} != 1 and no weighted layer before it to fold it into")
    with torch.no_grad():
        for parameter in (weighted[-1].weight, weighted[-1].bias):
            if parameter is not None:
                parameter.copy_(parameter.double().mul(gain).float())


def _recurrent(name: str, inner: SpikingLayer, rec: str, node: nir.NIRNode, gain: float):
    """Recurrent(inner) with the weight of the node `rec` (times the neuron's input gain, which scales both of its
    inputs), made once its stage's output shape is known."""
    weight = _tensor(node.weight).double().mul(gain).float()

    def make(shape: tuple[int, ...]) -> Recurrent:
        if len(shape) != 1 or weight.shape[0] != shape[0]:
            raise NIRError(
                f"node {rec!r}: a recurrent weight of shape {list(weight.shape)} does not fit the neurons of {name!r}, "
                f"of shape {list(shape)} (a flat layer of n neurons takes [n, n])"
            )
        inner.shape = shape
        layer = Recurrent(lambda shape: inner, shape=shape)
        with torch.no_grad():
            layer.weight.copy_(weight)
        return layer

    return make


def from_nir(graph: nir.NIRGraph, dt: float | None = None, readout: str | None = None) -> NIRNet:
    """A SpikingNet (input `[T, B, *input shape]`) computing what the graph does; NIRError (one line) if it can't.
    `dt`: seconds per step (default: the graph's metadata, else 1e-4); `readout`: spike_count | membrane (default:
    membrane when the last neuron is an LI, else the graph's metadata, else spike_count)."""
    metadata = graph.metadata if isinstance(graph.metadata, dict) else {}
    dt = dt if dt is not None else metadata.get("dt", DT)
    if not (isinstance(dt, (int, float, np.floating)) and np.isfinite(dt) and dt > 0):
        raise NIRError(f"dt={dt!r} is not allowed: a finite number of seconds > 0")
    dt = float(dt)
    graph = inline_subgraphs(graph)  # snnTorch's recurrent layers: a subgraph node each
    check_finite(graph)
    nodes, recurrent = chain(graph)
    stages, neurons, layers = [], [], []
    (input_node,) = (n for n in graph.nodes.values() if isinstance(n, nir.Input))
    input_shape = tuple(int(d) for d in np.asarray(input_node.input_type["input"]).reshape(-1))
    if len(input_shape) == 1:
        layers.append(nn.Flatten())  # a flat input: the image is read row by row, as torch flattens it
    for name, node in nodes:
        if isinstance(node, LAYERS):
            try:
                layers.append(layer(name, node))
            except NIRError:
                raise
            except (ValueError, TypeError, RuntimeError) as error:  # torch refusing a parameter, e.g. padding
                raise NIRError(f"node {name!r}: {str(error).splitlines()[0]}") from None
            continue
        if isinstance(node, nir.LI) and name != nodes[-1][0]:
            raise NIRError(f"node {name!r}: an LI (no spikes) is only supported as the last node, as the readout")
        module, gain = neuron(name, node, dt)
        if gain != 1:
            _fold_gain(name, layers, gain)
        if name in recurrent:
            module = _recurrent(name, module, recurrent[name], graph.nodes[recurrent[name]], gain)
        stages.append(nn.Sequential(*layers))
        neurons.append(module)
        layers = []
    if layers or not stages:
        raise NIRError(
            "the last node before Output must be a neuron (LIF, IF, LI or CubaLIF): the logits are read off it"
        )
    if isinstance(neurons[-1], LeakyIntegrator):
        readout = "membrane"
    readout = readout or str(metadata.get("readout", "spike_count"))
    if readout not in READOUTS:
        raise NIRError(f"readout {readout!r} is not one of {', '.join(READOUTS)}")
    try:  # shapes the graph did not state (no type check) show up here, once: the net sizes its neurons by a pass
        return NIRNet(stages, neurons, readout, input_shape).eval()
    except RuntimeError as error:
        raise NIRError(f"the layers' shapes do not fit together ({str(error).splitlines()[0]})") from None


def _plain(value):
    """Metadata read back from HDF5 holds numpy scalars and arrays: make them JSON-friendly."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value


def load_nir(path: str | Path, config_folders=()) -> tuple[NIRNet, dict]:
    """Read a .nir file and build its network; `info`: the file, readout, dt, input shape, node types, the graph's
    metadata, and its checked T and encoder (None where it records none). NIRError, one line naming the file, on any
    failure. `config_folders`: the user's config folders of this command line, whose encoders and datasets the
    metadata may name too."""
    path = Path(path)
    if not path.is_file():
        raise NIRError(f"{path}: no such NIR file")
    try:
        check_declared_sizes(path)
        graph = nir.read(path)  # HDF5: data only, and only NIR's own node types are built from it
    except NIRError as error:
        raise NIRError(f"{path}: {error}") from None
    except Exception as error:  # h5py and nir raise many kinds (OSError, KeyError, AssertionError, ValueError, ...)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise NIRError(f"{path}: not a readable NIR file ({reason})") from None
    metadata = _plain(graph.metadata if isinstance(graph.metadata, dict) else {})
    try:
        # metadata is data: checked plain values only
        encoder, T = stored_encoder(metadata, config_folders), stored_T(metadata)
        data = stored_data(metadata, config_folders)
        net = from_nir(graph)
    except NIRError as error:
        raise NIRError(f"{path}: {error}") from None
    except Exception as error:  # a malformed node the checks above did not foresee: still one line naming the file
        reason = (str(error).splitlines() or [""])[0]
        raise NIRError(f"{path}: cannot be built ({type(error).__name__}: {reason})") from None
    nodes, recurrent = chain(inline_subgraphs(graph))
    info = {
        "file": str(path),
        "readout": net.readout,
        "dt": float(metadata.get("dt", DT)),
        "input_shape": [int(d) for d in np.asarray(next(iter(graph.inputs.values())).input_type["input"])],
        "nodes": [type(node).__name__ for _, node in nodes],
        "recurrent": recurrent,  # {neuron node: its recurrent weight node}
        "metadata": metadata,
        "T": T,
        "encoder": encoder,  # (the project's encoder class, its arguments but T), or None
        "data": data,  # the project's data module class
    }
    return net, info
