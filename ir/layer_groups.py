"""The layers of a model as training sees them: a chain of layer groups, each one trainable layer and what follows it.

HierTrain (paper 002, Sec. IV-A) treats a DNN as "a sequence of distinct layers,
and the output of one layer feeds into the input of the next"; its tasks train
layers 1..m. On an fx graph a group starts at a node with parameters (conv,
linear, batch norm) and takes the parameter-free nodes after it (activation,
pooling, flatten, dropout, and a batch norm, whose parameters train with the
layer before it); group ``i``'s output is ``MO_i``, the one tensor that crosses
to group ``i + 1``. Between two layers the boundary goes where the tensor is
smallest (after a pooling, not before it), and only where exactly one tensor
is live: a conv inside a residual block joins the group that is open (a ResNet
block is one group).

>>> from torch import fx, nn
>>> from halocut.ir.layers import annotate_layers
>>> gm = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
...                                      nn.Linear(4 * 3 * 3, 5)))
>>> _ = annotate_layers(gm, (1, 3, 8, 8))
>>> [(g.name, g.nodes, g.output_bytes) for g in layer_groups(gm)]
[('_0', ('_0', '_1', '_2', '_3'), 144), ('_4', ('_4',), 20)]
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.graph import compute_nodes, output_nodes

OPENS = frozenset({"conv2d", "conv_transpose2d", "linear", "matmul"})  # kinds that start a group


@dataclass(frozen=True)
class LayerGroup:
    """One trainable layer and the nodes after it up to the next; sizes are per sample (batch 1 analysis)."""

    name: str  # the group's first layer with multiply-adds and parameters
    nodes: tuple[str, ...]
    flops: int  # forward, per sample
    params: int
    param_bytes: int  # MP_i
    output_bytes: int  # MO_i, per sample
    output_shape: tuple[int, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "nodes": list(self.nodes), "flops": self.flops, "params": self.params,
                "param_bytes": self.param_bytes, "output_bytes": self.output_bytes,
                "output_shape": list(self.output_shape)}


def layer_groups(graph_module: fx.GraphModule) -> list[LayerGroup]:
    """The chain of layer groups of an annotated graph (:func:`halocut.ir.layers.annotate_layers` first).

    The graph must return one tensor (the logits) and have at least one node with parameters.
    """
    nodes = compute_nodes(graph_module)
    if any("layer" not in n.meta for n in nodes):
        raise HalocutError("layer groups need an annotated graph: run annotate_layers first")
    returned = output_nodes(graph_module)
    if len(returned) != 1:
        raise HalocutError(f"training needs a model that returns one tensor (the logits); this one returns "
                           f"{len(returned)}")
    cuttable = _single_tensor_cuts(graph_module, nodes)
    openers = [p for p, n in enumerate(nodes) if _opens(n)]
    if not openers:
        raise HalocutError("training needs a model with a conv or linear layer with parameters; this one has none")
    ends = []
    for here, following in zip(openers, openers[1:]):
        candidates = [p for p in range(max(here, ends[-1] + 1 if ends else 0), following) if cuttable[p]]
        if candidates:  # the smallest tensor between two layers crosses; the latest of equals
            ends.append(min(reversed(candidates), key=lambda p: nodes[p].meta["layer"].output_bytes))
    starts = [0] + [e + 1 for e in ends]
    return [_group(nodes[a:b]) for a, b in zip(starts, [e + 1 for e in ends] + [len(nodes)])]


def _opens(node: fx.Node) -> bool:
    layer = node.meta["layer"]
    return layer.params > 0 and layer.kind in OPENS


def _single_tensor_cuts(graph_module: fx.GraphModule, nodes: list[fx.Node]) -> list[bool]:
    """``cuts[p]``: after compute node ``p`` only its own output is live (weights do not count)."""
    position = {n: i for i, n in enumerate(nodes)}
    last_use: dict[fx.Node, int] = {}
    for node in graph_module.graph.nodes:
        reader = len(nodes) if node.op == "output" else position.get(node)
        if reader is None:
            continue
        for source in node.all_input_nodes:
            if source.op != "get_attr":
                last_use[source] = max(last_use.get(source, -1), reader)
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    cuts = []
    for p, node in enumerate(nodes):
        live = [v for v in placeholders + nodes[:p + 1] if last_use.get(v, -1) > p]
        cuts.append(live == [node])
    return cuts


def _group(members: list[fx.Node]) -> LayerGroup:
    infos = [n.meta["layer"] for n in members]
    first = next(n for n in members if _opens(n))
    last = infos[-1]
    if not last.output_shape:
        raise HalocutError(f"layer '{members[-1].name}': a layer group must end in one tensor")
    batch = last.output_shape[0] or 1
    return LayerGroup(first.name, tuple(n.name for n in members), sum(i.flops for i in infos) // batch,
                      sum(i.params for i in infos), sum(i.param_bytes for i in infos), last.output_bytes // batch,
                      tuple(last.output_shape[1:]))
