"""Slice a layer-volume into spatial tiles, and linear layers into clusters.

:func:`slice_stage` turns a volume (consecutive nodes, branches allowed) and a
tiling of its last node's output into one standalone ``fx.GraphModule`` per
tile. A tile takes the crop (halo included) of each outside input it reads and
computes exactly its output region: every sliding-window op runs with padding
0 on a crop that is padded only where its window crosses the real border, so
tiles equal the unsplit layer bit for bit up to float summation order.

:func:`slice_fc` splits linear layers into clusters: over output features
(model parallel), over input features with partial results summed (data
parallel), or CoopAI's hybrid of two consecutive linear layers (model parallel
on the first, data parallel on the second, no exchange in between).

>>> import torch
>>> from torch import nn
>>> from halocut.compiler.frontend import load_model
>>> from halocut.ir.layers import annotate_layers
>>> loaded = load_model(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), (1, 3, 8, 8))
>>> _ = annotate_layers(loaded.graph_module, (1, 3, 8, 8))
>>> tiles = slice_stage(loaded.graph_module, ["_0", "_1"], [Region((0, 3), (0, 8)), Region((3, 8), (0, 8))])
>>> [(t.inputs[0][1].rows, t.output_region.rows) for t in tiles]
[((0, 4), (0, 3)), ((2, 8), (3, 8))]
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.graph import tensor_inputs, volume_nodes
from halocut.ir.ops import call_arguments
from halocut.ir.plan import check_fc, check_single_output
from halocut.ir.regions import EMPTY, Interval, Region
from halocut.passes.halo import HALO_RULES, compute_halos, resample_taps

_SLIDING = {"conv2d", "maxpool2d", "avgpool2d", "pad"}


@dataclass(frozen=True)
class TilePart:
    """One tile of a spatial stage: a module, the crops it takes and the region it produces."""

    module: fx.GraphModule
    inputs: tuple[tuple[str, Region], ...]  # (outside node, region of it), in argument order
    output: str
    output_region: Region


@dataclass(frozen=True)
class FcPart:
    """Clusters of a fully connected stage and the module that merges their results."""

    clusters: tuple[fx.GraphModule, ...]
    input_features: tuple[Interval | None, ...]  # slice of the input each cluster takes (None: all)
    merge: fx.GraphModule
    input: str
    output: str


def slice_stage(graph_module: fx.GraphModule, names: list[str], tiles: list[Region]) -> list[TilePart]:
    """One standalone module per tile of the volume ``names`` (run ``annotate_layers`` first)."""
    volume = [n for n in volume_nodes(graph_module, names) if n.op != "get_attr"]
    check_single_output(volume)
    return [_tile(graph_module, volume, region) for region in tiles]


class _TileBuilder:
    """Emit one tile's graph: each volume node computes exactly its required region."""

    def __init__(self, root: fx.GraphModule, needs: dict[str, Region]):
        self.root, self.needs = root, needs
        self.graph = fx.Graph()
        self.owner: dict[str, Any] = {}
        self.held: dict[str, tuple[fx.Node, Region]] = {}

    def placeholder(self, source: fx.Node) -> None:
        self.held[source.name] = (self.graph.placeholder(source.name), self.needs[source.name])

    def crop(self, source: fx.Node, region: Region) -> fx.Node:
        node, held = self.held[source.name]
        if region == held:
            return node
        inner = region.relative_to(held)
        index = (slice(None), slice(None), slice(*inner.rows), slice(*inner.cols))
        return self._call(operator.getitem, (node, index), {}, f"{source.name}__crop")

    def attr(self, name: str, value: Any) -> fx.Node | None:
        if value is None:
            return None
        self.owner[name] = value
        return self.graph.get_attr(name)

    def emit(self, node: fx.Node) -> None:
        layer = node.meta["layer"]
        if self.needs.get(node.name, EMPTY).is_empty() and layer.kind != "size":
            return  # this tile's windows only see the node's padding
        if layer.kind == "size":
            new = self.graph.node_copy(node, lambda n: self._value(n))
        elif layer.kind in _SLIDING:
            new = self._sliding(node)
        elif layer.kind == "conv_transpose2d":
            new = self._conv_transpose(node)
        elif layer.kind == "upsample":
            new = self._resample(node)
        elif layer.kind == "pixel_shuffle":
            new = self._pixel_shuffle(node)
        else:
            new = self._pointwise(node)
        self.held[node.name] = (new, self.needs.get(node.name, Region((0, 0), (0, 0))))

    def _value(self, node: fx.Node) -> fx.Node:
        if node.op == "get_attr":
            return self.attr(node.target, operator.attrgetter(node.target)(self.root))
        return self.held[node.name][0]

    def _sliding(self, node: fx.Node) -> fx.Node:
        layer = node.meta["layer"]
        (source,) = tensor_inputs(node)
        shape = tuple(source.meta["tensor_meta"].shape)
        wanted = HALO_RULES[layer.kind](layer, self.needs[node.name], shape)
        inside = wanted.clip(*shape[-2:])
        pads = (inside.cols[0] - wanted.cols[0], wanted.cols[1] - inside.cols[1],
                inside.rows[0] - wanted.rows[0], wanted.rows[1] - inside.rows[1])
        fill = float("-inf") if layer.kind == "maxpool2d" else layer.attrs.get("value", 0.0)
        if inside.is_empty():
            x = self._call(torch.full, ((shape[0], shape[1], wanted.height, wanted.width), fill), {},
                           f"{node.name}__window")
        elif any(pads):
            x = self._call(F.pad, (self.crop(source, inside), pads), {"value": fill}, f"{node.name}__pad")
        else:
            x = self.crop(source, inside)
        a = layer.attrs
        if layer.kind == "pad":  # the crop-and-pad is the layer: name its result after it
            return self._call(operator.getitem, (x, (slice(None),) * 4), {}, node.name)
        if layer.kind == "conv2d":
            weight, bias = _weights(self, node)
            return self._call(F.conv2d, (x, weight, bias, a["stride"], 0, a["dilation"], a["groups"]), {}, node.name)
        if layer.kind == "maxpool2d":
            return self._call(F.max_pool2d, (x, a["kernel"], a["stride"], 0, a["dilation"]), {}, node.name)
        # windows lie wholly inside the padded crop: the mean times the window size is the sum
        mean = self._call(F.avg_pool2d, (x, a["kernel"], a["stride"], 0), {}, f"{node.name}__mean")
        summed = self._call(operator.mul, (mean, float(a["kernel"][0] * a["kernel"][1])), {}, f"{node.name}__sum")
        divisor = self.attr(f"{node.name}_divisor", _avg_divisor(layer, shape, self.needs[node.name]))
        return self._call(operator.truediv, (summed, divisor), {}, node.name)

    def _call(self, function, args: tuple, kwargs: dict, name: str) -> fx.Node:
        """A call named after the layer it computes, so chains can be cut at it."""
        return self.graph.create_node("call_function", function, args, kwargs, name=name)

    def _pointwise(self, node: fx.Node) -> fx.Node:
        layer = node.meta["layer"]
        rule = HALO_RULES[layer.kind]
        crops = {}
        for source in tensor_inputs(node):
            shape = tuple(source.meta["tensor_meta"].shape)
            crops[source.name] = self.crop(source, rule(layer, self.needs[node.name], shape).clip(*shape[-2:]))
        if node.op == "call_module":
            self.owner[node.target] = self.root.get_submodule(node.target)
        new = self.graph.node_copy(node, lambda n: crops[n.name] if n.name in crops else self._value(n))
        return new

    def _crop_held(self, value: fx.Node, covered: Region, region: Region, name: str) -> fx.Node:
        """``region`` of a value that holds ``covered`` (a superset), under the layer's name."""
        inner = region.relative_to(covered)
        return self._call(operator.getitem, (value, (slice(None), slice(None), slice(*inner.rows),
                                                     slice(*inner.cols))), {}, name)

    def _resample(self, node: fx.Node) -> fx.Node:
        """Interpolation as gathers of input rows, then columns, weighted by PyTorch's own taps."""
        layer, (source,) = node.meta["layer"], tensor_inputs(node)
        held = self.needs[source.name]
        x, out = self.held[source.name][0], self.needs[node.name]
        for axis, (interval, offset) in enumerate(((out.rows, held.rows[0]), (out.cols, held.cols[0]))):
            index, weights = resample_taps(layer, axis, interval, source.meta["tensor_meta"].shape[2 + axis])
            view = (1, 1, -1, 1) if axis == 0 else (1, 1, 1, -1)
            terms = []
            for k in range(index.shape[1]):
                tap = f"{node.name}__tap{axis}{k}"  # every node named after its layer: none takes a layer's name
                term = self._call(torch.index_select, (x, 2 + axis, self.attr(tap, torch.from_numpy(
                    index[:, k] - offset))), {}, f"{tap}_gather")
                if not (weights[:, k] == 1.0).all():
                    weight = self.attr(f"{tap}_weight", torch.from_numpy(weights[:, k]).reshape(view))
                    term = self._call(operator.mul, (term, weight), {}, f"{tap}_weighted")
                terms.append(term)
            x = terms[0]
            for k, term in enumerate(terms[1:], 1):
                x = self._call(operator.add, (x, term), {}, f"{node.name}__sum{axis}{k}")
        return self._call(operator.getitem, (x, (slice(None),) * 4), {}, node.name)

    def _pixel_shuffle(self, node: fx.Node) -> fx.Node:
        """Depth-to-space of the whole input pixels under the region, cropped to it."""
        layer, (source,) = node.meta["layer"], tensor_inputs(node)
        shape, r = tuple(source.meta["tensor_meta"].shape), node.meta["layer"].attrs["factor"]
        read = HALO_RULES["pixel_shuffle"](layer, self.needs[node.name], shape).clip(*shape[-2:])
        y = self._call(F.pixel_shuffle, (self.crop(source, read), r), {}, f"{node.name}__shuffle")
        covered = Region((read.rows[0] * r, read.rows[1] * r), (read.cols[0] * r, read.cols[1] * r))
        return self._crop_held(y, covered, self.needs[node.name], node.name)

    def _conv_transpose(self, node: fx.Node) -> fx.Node:
        """The input pixels that scatter into the region, transposed with no padding, cropped to the region,
        zero-filled where no input reaches (a stride wider than the kernel, output_padding), then the bias."""
        layer, (source,) = node.meta["layer"], tensor_inputs(node)
        a, shape, region = layer.attrs, tuple(source.meta["tensor_meta"].shape), self.needs[node.name]
        inside = HALO_RULES["conv_transpose2d"](layer, region, shape).clip(*shape[-2:])
        weight, bias = _weights(self, node)
        reach = [(i0 * s - pad, (i1 - 1) * s - pad + d * (k - 1) + 1) for (i0, i1), s, pad, d, k in
                 zip((inside.rows, inside.cols), a["stride"], a["padding"][::2], a["dilation"], a["kernel"])]
        kept = region.intersect(Region(*reach))
        if inside.is_empty() or kept.is_empty():
            x = self._call(torch.zeros, ((shape[0], a["out_channels"], region.height, region.width),), {},
                           f"{node.name}__zeros")
        else:
            y = self._call(F.conv_transpose2d, (self.crop(source, inside), weight, None, a["stride"], 0, 0,
                                                a["groups"], a["dilation"]), {}, f"{node.name}__scatter")
            x = self._crop_held(y, Region(*reach), kept, f"{node.name}__crop")
            pads = (kept.cols[0] - region.cols[0], region.cols[1] - kept.cols[1],
                    kept.rows[0] - region.rows[0], region.rows[1] - kept.rows[1])
            if any(pads):
                x = self._call(F.pad, (x, pads), {}, f"{node.name}__fill")
        if bias is not None:
            shaped = self._call(torch.reshape, (bias, (1, -1, 1, 1)), {}, f"{node.name}__bias")
            x = self._call(operator.add, (x, shaped), {}, f"{node.name}__biased")
        return self._call(operator.getitem, (x, (slice(None),) * 4), {}, node.name)


def _tile(root: fx.GraphModule, volume: list[fx.Node], region: Region) -> TilePart:
    needs = compute_halos(volume, region)
    members = {n.name for n in volume}
    builder = _TileBuilder(root, needs)
    outside = []
    for node in volume:
        for source in tensor_inputs(node):
            if source.name not in members and source.name not in builder.held and not needs[source.name].is_empty():
                builder.placeholder(source)
                outside.append((source.name, needs[source.name]))
    for node in volume:
        builder.emit(node)
    last = volume[-1]
    builder.graph.output(builder.held[last.name][0])
    module = fx.GraphModule(builder.owner, builder.graph, class_name="Tile")
    module.graph.lint()
    return TilePart(module, tuple(outside), last.name, region)


def _weights(builder: _TileBuilder, node: fx.Node) -> tuple[fx.Node, fx.Node | None]:
    if node.op == "call_module":
        module = builder.root.get_submodule(node.target)
        return (builder.attr(f"{node.target}.weight", module.weight),
                builder.attr(f"{node.target}.bias", module.bias))
    arguments = call_arguments(node, builder.root, node.meta["layer"].kind)
    weight, bias = arguments["weight"], arguments.get("bias")
    return (builder._value(weight), builder._value(bias) if isinstance(bias, fx.Node) else None)


def _avg_divisor(layer, input_shape: tuple[int, ...], out: Region) -> torch.Tensor:
    """PyTorch's per-position averaging divisor of the global layer, for the tile's output region."""
    a = layer.attrs
    top, _, left, _ = a["padding"]

    def axis(interval: Interval, size: int, kernel: int, stride: int, pad: int) -> torch.Tensor:
        divisors = []
        for i in range(*interval):
            start = i * stride - pad
            end = min(start + kernel, size + pad)
            if not a.get("count_include_pad", True):
                start, end = max(start, 0), min(end, size)
            divisors.append(end - start)
        return torch.tensor(divisors, dtype=torch.float32)

    rows = axis(out.rows, input_shape[-2], a["kernel"][0], a["stride"][0], top)
    cols = axis(out.cols, input_shape[-1], a["kernel"][1], a["stride"][1], left)
    return torch.outer(rows, cols)[None, None]


# --- fully connected clusters

def slice_fc(graph_module: fx.GraphModule, names: list[str], mode: str, features: list[Interval]) -> FcPart:
    """Split the linear layer(s) of ``names`` into clusters over ``features`` ranges.

    ``model``: one linear (then pointwise ops), ranges over its output features.
    ``data``: one linear (then pointwise ops, applied after the sum), ranges over its input features.
    ``hybrid``: linear, pointwise ops, linear (then pointwise ops); ranges over the first one's output
    features, which are the second one's input features.
    """
    nodes = [n for n in volume_nodes(graph_module, names) if n.op != "get_attr"]
    check_fc(nodes, mode, features)
    kinds = [n.meta["layer"].kind for n in nodes]
    linears = [i for i, k in enumerate(kinds) if k == "linear"]
    first = nodes[0]
    (source,) = tensor_inputs(first)
    inner = nodes[1:linears[1]] if mode == "hybrid" else []
    last_linear = nodes[linears[-1]]
    tail = nodes[linears[-1] + 1:]
    clusters = []
    for start, stop in features:
        clusters.append(_fc_cluster(graph_module, mode, first, last_linear, inner,
                                    tail if mode == "model" else [], (start, stop)))
    merge = _fc_merge(graph_module, mode, last_linear, tail, len(features))
    inputs = tuple((f if mode == "data" else None) for f in features)
    return FcPart(tuple(clusters), inputs, merge, source.name, nodes[-1].name)


def _linear_weights(root: fx.GraphModule, node: fx.Node) -> tuple[torch.Tensor, torch.Tensor | None]:
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        return module.weight.detach(), None if module.bias is None else module.bias.detach()
    arguments = call_arguments(node, root, "linear")
    if "weight" not in arguments:
        raise HalocutError(f"linear '{node.name}' ({node.meta['layer'].target}) cannot be clustered")
    bias = arguments.get("bias")
    weight = operator.attrgetter(arguments["weight"].target)(root).detach()
    return weight, None if bias is None else operator.attrgetter(bias.target)(root).detach()


def _copy_pointwise(graph: fx.Graph, owner: dict, root: fx.GraphModule, nodes: list[fx.Node], x: fx.Node) -> fx.Node:
    for node in nodes:
        if node.op == "call_module":
            owner[node.target] = root.get_submodule(node.target)
        x = graph.node_copy(node, lambda n, value=x: value)
    return x


def _fc_cluster(root, mode, first, last_linear, inner, tail, features: Interval) -> fx.GraphModule:
    graph, owner = fx.Graph(), {}
    x = graph.placeholder("x")
    start, stop = features
    weight, bias = _linear_weights(root, first)
    if mode == "data":
        owner["weight"] = weight[:, start:stop].clone()
        y = graph.call_function(F.linear, (x, graph.get_attr("weight")))
    else:
        owner["weight"], owner["bias"] = weight[start:stop].clone(), None if bias is None else bias[start:stop].clone()
        y = graph.call_function(F.linear, (x, graph.get_attr("weight"),
                                           graph.get_attr("bias") if bias is not None else None))
    if mode == "hybrid":
        y = _copy_pointwise(graph, owner, root, inner, y)
        second, _ = _linear_weights(root, last_linear)
        owner["weight2"] = second[:, start:stop].clone()
        y = graph.call_function(F.linear, (y, graph.get_attr("weight2")))
    y = _copy_pointwise(graph, owner, root, tail, y)
    graph.output(y)
    return fx.GraphModule(owner, graph, class_name="Cluster")


def _fc_merge(root, mode, last_linear, tail, count: int) -> fx.GraphModule:
    graph, owner = fx.Graph(), {}
    parts = [graph.placeholder(f"part{i}") for i in range(count)]
    if mode == "model":
        graph.output(graph.call_function(torch.cat, (parts, -1)))
        return fx.GraphModule(owner, graph, class_name="Merge")
    total = parts[0]
    for part in parts[1:]:
        total = graph.call_function(operator.add, (total, part))
    _, bias = _linear_weights(root, last_linear)
    if bias is not None:
        owner["bias"] = bias.clone()
        total = graph.call_function(operator.add, (total, graph.get_attr("bias")))
    graph.output(_copy_pointwise(graph, owner, root, tail, total))
    return fx.GraphModule(owner, graph, class_name="Merge")
