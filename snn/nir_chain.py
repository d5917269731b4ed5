"""The shape of an imported NIR graph: one chain Input -> ... -> Output, whose spiking neurons may each have one
recurrent connection, a cycle neuron -> weight -> the same neuron (`snn.recurrent.Recurrent`; the one-step delay on
the cycle is implicit, the NIR paper's convention and snnTorch's RLeaky/RSynaptic). Every other loop, branch or merge
is refused with one line naming a node. A graph is data: every check visits each node and edge a bounded number of
times, so no graph, however it is wired, makes them loop."""

from collections import defaultdict

import nir
import numpy as np

from snn.nir_graph import NIRError

LAYERS = (nir.Affine, nir.Linear, nir.Conv2d, nir.AvgPool2d, nir.SumPool2d, nir.Flatten)
NEURONS = (nir.LIF, nir.IF, nir.LI, nir.CubaLIF)
SPIKING = (nir.LIF, nir.IF, nir.CubaLIF)  # the neurons a recurrent connection may feed back into
SUPPORTED = ", ".join(t.__name__ for t in (nir.Input, nir.Output, *LAYERS, *NEURONS))
RECURRENT = "a recurrent connection is a spiking neuron (LIF, IF or CubaLIF) -> a Linear [n, n] -> the same neuron"


def _links(edges: list[tuple[str, str]]) -> tuple[dict, dict]:
    after, before = defaultdict(list), defaultdict(list)
    for a, b in edges:
        after[a].append(b)
        before[b].append(a)
    return after, before


def _neuron_count(node: nir.NIRNode) -> int | None:
    """The neurons a node's parameter arrays describe, or None when they are scalars (one value for the layer)."""
    size = np.asarray(node.v_threshold).size
    return size if size > 1 else None


def recurrences(graph: nir.NIRGraph, edges: list[tuple[str, str]]) -> dict[str, str]:
    """{neuron: its recurrent weight node} for the weight nodes on a two-node loop with a spiking neuron, each
    checked: its only edges are neuron -> weight -> neuron, a square weight that fits the neuron, no bias."""
    after, before = _links(edges)
    found = {}
    for name, node in graph.nodes.items():
        partners = set(after[name]) & set(before[name])
        if not isinstance(node, (nir.Linear, nir.Affine)) or not partners:
            continue
        neuron = min(partners)
        if after[name] != [neuron] or before[name] != [neuron]:
            raise NIRError(f"node {name!r} closes a loop with {neuron!r} but has other edges too; {RECURRENT}")
        kind = type(graph.nodes[neuron]).__name__
        if not isinstance(graph.nodes[neuron], SPIKING):
            raise NIRError(f"node {name!r} feeds node {neuron!r}, a {kind}, back into itself; {RECURRENT}")
        if neuron in found:
            both = f"{found[neuron]!r}, {name!r}"
            raise NIRError(f"node {neuron!r} has two recurrent connections ({both}); one is supported")
        shape = np.shape(node.weight)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise NIRError(f"node {name!r}: a recurrent weight of shape {list(shape)} is not square [n, n]")
        n = _neuron_count(graph.nodes[neuron])
        if n is not None and n != shape[0]:
            raise NIRError(
                f"node {name!r}: a recurrent weight of shape {list(shape)} does not fit the {n} neurons of {neuron!r}"
            )
        if isinstance(node, nir.Affine) and np.any(np.asarray(node.bias) != 0):
            raise NIRError(
                f"node {name!r}: a recurrent Affine with a non-zero bias is not supported (whether it reaches the "
                "first step is not defined); a Linear is"
            )
        found[neuron] = name
    return found


def find_loop(names, edges: list[tuple[str, str]]) -> list[str] | None:
    """A directed cycle as [a, b, ..., a], or None: depth-first, iterative, each node entered once."""
    after, _ = _links(edges)
    state = dict.fromkeys(names, 0)  # 0: not seen, 1: on the current path, 2: done
    for root in names:
        if state[root]:
            continue
        path, stack = [root], [iter(after[root])]
        state[root] = 1
        while stack:
            successor = next(stack[-1], None)
            if successor is None:
                state[path.pop()] = 2
                stack.pop()
            elif state[successor] == 1:
                return path[path.index(successor) :] + [successor]
            elif state[successor] == 0:
                state[successor] = 1
                path.append(successor)
                stack.append(iter(after[successor]))
    return None


def inline_subgraphs(graph: nir.NIRGraph) -> nir.NIRGraph:
    """The graph with its subgraph nodes (snnTorch's export writes a recurrent layer as one: input -> lif -> output,
    lif -> w_rec -> lif) replaced by their nodes, named `<node>.<name>`, and edges; one level (a deeper subgraph stays,
    to be refused), one entry and one exit each, so the edges grow by at most the subgraphs' own."""
    if not any(isinstance(node, nir.NIRGraph) for node in graph.nodes.values()):
        return graph
    nodes, edges, entry, leave = {}, [], {}, {}
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.NIRGraph):
            nodes[name] = node
            continue
        ins = [k for k, n in node.nodes.items() if isinstance(n, nir.Input)]
        outs = [k for k, n in node.nodes.items() if isinstance(n, nir.Output)]
        inner = [(str(a), str(b)) for a, b in node.edges]
        first, last = [b for a, b in inner if a in ins], [a for a, b in inner if b in outs]
        if len(ins) != 1 or len(outs) != 1 or len(first) != 1 or len(last) != 1:
            raise NIRError(f"node {name!r} is a subgraph that is not one Input -> ... -> one Output: not imported")
        entry[name], leave[name] = f"{name}.{first[0]}", f"{name}.{last[0]}"
        for key, inner_node in node.nodes.items():
            if key not in (ins[0], outs[0]):
                if f"{name}.{key}" in graph.nodes:
                    raise NIRError(f"node {name}.{key!r} is in the graph and in its subgraph {name!r}")
                nodes[f"{name}.{key}"] = inner_node
        edges += [(f"{name}.{a}", f"{name}.{b}") for a, b in inner if a not in ins and b not in outs]
    edges += [(leave.get(str(a), str(a)), entry.get(str(b), str(b))) for a, b in graph.edges]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph.metadata, type_check=False)


def chain(graph: nir.NIRGraph) -> tuple[list[tuple[str, nir.NIRNode]], dict[str, str]]:
    """(the nodes between Input and Output in order, {neuron: its recurrent weight node}); a NIRError unless the
    graph is one unbranched chain with, at most, a recurrent connection per spiking neuron."""
    for name, node in graph.nodes.items():
        if not isinstance(node, (nir.Input, nir.Output, *LAYERS, *NEURONS)):
            kind = "a subgraph" if isinstance(node, nir.NIRGraph) else type(node).__name__
            raise NIRError(f"node {name!r} is {kind}, which cannot be imported; supported: {SUPPORTED}")
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRError(f"the graph has {len(inputs)} Input and {len(outputs)} Output nodes; one of each is needed")
    edges = [(str(a), str(b)) for a, b in graph.edges]
    for a, b in edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise NIRError(f"the edge {a!r} -> {b!r} names a node the graph does not have")
        if a == b:
            raise NIRError(f"node {a!r} feeds itself (an edge from a node to itself); {RECURRENT}")
    recurrent = recurrences(graph, edges)
    weights = set(recurrent.values())
    edges = [(a, b) for a, b in edges if a not in weights and b not in weights]
    loop = find_loop([k for k in graph.nodes if k not in weights], edges)
    if loop:
        cycle = " -> ".join(loop)
        raise NIRError(f"node {loop[0]!r} is on the loop {cycle}, which is not a recurrent connection; {RECURRENT}")
    after, before = _links(edges)
    for name in graph.nodes:
        if len(after[name]) > 1 or len(before[name]) > 1:
            raise NIRError(f"node {name!r} branches or merges; only chains Input -> ... -> Output import")
    order, current = [], inputs[0]
    while current != outputs[0]:  # no loops, no branches: each step reaches a new node
        if not after[current]:
            raise NIRError(f"the chain from {inputs[0]!r} stops at {current!r} before reaching {outputs[0]!r}")
        current = after[current][0]
        order.append(current)
    if len(order) + 1 + len(weights) != len(graph.nodes):
        stray = sorted(set(graph.nodes) - {inputs[0], *order, *weights})
        raise NIRError(f"nodes {stray} are not on the chain from {inputs[0]!r} to {outputs[0]!r}")
    return [(name, graph.nodes[name]) for name in order[:-1]], recurrent
