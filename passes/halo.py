"""Receptive-field halos: which input rows and columns an output region needs, per op kind.

A :class:`Region` is half-open rows ``[r0, r1)`` and columns ``[c0, c1)`` of a
4-D (N, C, H, W) tensor. Each rule in :data:`HALO_RULES` maps the region a node
must produce to the region of one of its inputs it reads, *unclipped*: rows
below 0 or past the input's height are padding. :func:`compute_halos` walks a
layer-volume backwards: a node must produce the union of what its consumers in
the volume need. An op with no rule is an error naming it; ops whose output
depends on their whole input (adaptive pooling, linear, flatten) end a
splittable region and have no rule on purpose.

DistrEdge's Vertical-Splitting Law (paper 003, eqs. 1-2) is the chain case:
``h_in = (h_out - 1) * S + F`` per layer, F the (dilated) filter size.

>>> rule = HALO_RULES["conv2d"]
>>> from halocut.ir.layers import LayerInfo
>>> conv = LayerInfo("conv2d", "torch.nn.Conv2d", {"kernel": (3, 3), "stride": (1, 1),
...     "dilation": (1, 1), "padding": (1, 1, 1, 1)}, ((1, 3, 8, 8),), ((1, 4, 8, 8),))
>>> rule(conv, Region((0, 4), (0, 8)), (1, 3, 8, 8))
Region(rows=(-1, 5), cols=(-1, 9))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.graph import tensor_inputs
from halocut.ir.layers import LayerInfo
from halocut.ir.ops import POINTWISE, WHOLE_INPUT
from halocut.ir.regions import EMPTY, Interval, Region

Region_ = Callable[[LayerInfo, Region, tuple[int, ...]], Region]


@dataclass(frozen=True)
class Rule:
    """One op kind's halo rule: ``region(layer, out, input_shape)`` and, for attributes it cannot split,
    ``refuses(layer)`` -> the reason (None: it splits). The one table both the planners' "splittable?" and the
    halo computation read, so they cannot disagree."""

    region: Region_
    refuses: Callable[[LayerInfo], str | None] = lambda layer: None

    def __call__(self, layer: LayerInfo, out: Region, input_shape: tuple[int, ...]) -> Region:
        return self.region(layer, out, input_shape)


HALO_RULES: dict[str, Rule] = {}

ELEMENTWISE_KINDS = POINTWISE | {"lrn", "add", "sub", "mul", "div", "cat"}  # one output position, one input position


def _window(out: Interval, kernel: int, stride: int, dilation: int, pad_before: int) -> Interval:
    """Input positions a sliding window reads for outputs ``out``: VSL eq. 1 with padding."""
    start = out[0] * stride - pad_before
    return start, (out[1] - 1) * stride - pad_before + dilation * (kernel - 1) + 1


def _per_axis(interval, layer: LayerInfo, out: Region) -> Region:
    """``interval(out, kernel, stride, dilation, pad_before)`` on the rows and on the columns."""
    a = layer.attrs
    top, _, left, _ = a["padding"]
    return Region(interval(out.rows, a["kernel"][0], a["stride"][0], a["dilation"][0], top),
                  interval(out.cols, a["kernel"][1], a["stride"][1], a["dilation"][1], left))


def _sliding(layer: LayerInfo, out: Region, input_shape: tuple[int, ...]) -> Region:
    return _per_axis(_window, layer, out)


def _pointwise(layer: LayerInfo, out: Region, input_shape: tuple[int, ...]) -> Region:
    height, width = input_shape[-2:] if len(input_shape) == 4 else (1, 1)
    out_height, out_width = layer.output_shape[-2:]
    rows = out.rows if height == out_height else (0, 1) if height == 1 else None
    cols = out.cols if width == out_width else (0, 1) if width == 1 else None
    if rows is None or cols is None:
        raise HalocutError(f"{layer.kind} ({layer.target}): input of shape {input_shape} "
                           f"does not broadcast spatially to {layer.output_shape}")
    return Region(rows, cols)


def _explicit_pad(layer: LayerInfo, out: Region, input_shape: tuple[int, ...]) -> Region:
    top, bottom, left, right = layer.attrs["padding"]
    return Region((out.rows[0] - top, out.rows[1] - top), (out.cols[0] - left, out.cols[1] - left))


def _reorg(layer: LayerInfo, out: Region, input_shape: tuple[int, ...]) -> Region:
    s = layer.attrs["stride"]
    return Region((out.rows[0] * s, out.rows[1] * s), (out.cols[0] * s, out.cols[1] * s))


RESAMPLED = ("nearest", "nearest-exact", "bilinear", "bicubic")
_CUBIC_A = -0.75  # PyTorch's bicubic convolution constant (Keys' kernel)


def resample_taps(layer: LayerInfo, axis: int, out: Interval, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Input positions and weights each output position of ``out`` blends along ``axis`` (0 rows, 1 columns).

    PyTorch's CPU kernels in float32 (``UpSample.h``): nearest reads
    ``floor(dst * ratio)``, nearest-exact ``floor((dst + 0.5) * ratio)``; the
    linear modes take ``src = ratio * dst`` with ``align_corners`` and
    ``ratio * (dst + 0.5) - 0.5`` without (clamped at 0 for bilinear), then
    two taps (bilinear) or four with Keys' cubic weights (bicubic), indices
    clamped to the border. Upsampling separates by axis, so a tile of any
    size and place reproduces the unsplit layer.
    """
    a = layer.attrs
    ratio, out_size = np.float32(a["ratio"][axis]), layer.output_shape[-2 + axis]
    dst = np.arange(*out, dtype=np.float32)
    if a["mode"] in ("nearest", "nearest-exact"):
        if out_size == in_size:
            index = dst.astype(np.int64)
        elif out_size == 2 * in_size and a["mode"] == "nearest":
            index = dst.astype(np.int64) >> 1
        else:
            index = np.floor((dst + np.float32(0.5 if a["mode"] == "nearest-exact" else 0.0)) * ratio).astype(np.int64)
        return np.minimum(index, in_size - 1)[:, None], np.ones((len(dst), 1), dtype=np.float32)
    cubic = a["mode"] == "bicubic"
    src = ratio * dst if a["align_corners"] else ratio * (dst + np.float32(0.5)) - np.float32(0.5)
    if not cubic and not a["align_corners"]:
        src = np.maximum(src, np.float32(0.0))
    first = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    t = np.clip(src - first.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    if not cubic:
        step = (first < in_size - 1).astype(np.int64)
        return np.stack([first, first + step], 1), np.stack([np.float32(1.0) - t, t], 1)
    A = np.float32(_CUBIC_A)
    near = lambda x: ((A + 2) * x - (A + 3)) * x * x + 1  # noqa: E731  |x| <= 1
    far = lambda x: ((A * x - 5 * A) * x + 8 * A) * x - 4 * A  # noqa: E731  1 < |x| < 2
    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], 1).astype(np.float32)
    return np.clip(first[:, None] + np.arange(-1, 3), 0, in_size - 1), weights


def _upsample(layer: LayerInfo, out: Region, input_shape: tuple[int, ...]) -> Region:
    spans = []
    for axis, interval in enumerate((out.rows, out.cols)):
        if interval[0] >= interval[1]:
            spans.append((0, 0))
            continue
        index, _ = resample_taps(layer, axis, interval, input_shape[2 + axis])
        spans.append((int(index.min()), int(index.max()) + 1))
    return Region(*spans)


def _upsample_refuses(layer: LayerInfo) -> str | None:
    if layer.attrs["mode"] not in RESAMPLED:
        return f"no halo rule for mode '{layer.attrs['mode']}'; {', '.join(RESAMPLED)} split"
    if layer.attrs.get("antialias"):
        return "no halo rule for antialias=True"
    return None


def _transposed(out: Interval, kernel: int, stride: int, dilation: int, pad_before: int) -> Interval:
    """Input positions that scatter into outputs ``out`` of a transposed conv: ``y = i * S - P + k * D``."""
    start = -(-(out[0] + pad_before - dilation * (kernel - 1)) // stride)
    return start, max((out[1] - 1 + pad_before) // stride + 1, start)


def _conv_transpose(layer: LayerInfo, out: Region, input_shape: tuple[int, ...]) -> Region:
    return _per_axis(_transposed, layer, out)


def _pixel_shuffle(layer: LayerInfo, out: Region, input_shape: tuple[int, ...]) -> Region:
    r = layer.attrs["factor"]
    return Region((out.rows[0] // r, -(-out.rows[1] // r)), (out.cols[0] // r, -(-out.cols[1] // r)))


def _sliding_refuses(layer: LayerInfo) -> str | None:
    if layer.kind == "avgpool2d" and layer.attrs.get("divisor_override"):
        return "no halo rule for divisor_override"
    if layer.kind in ("conv2d", "conv_transpose2d") and layer.attrs.get("padding_mode", "zeros") != "zeros":
        return f"no halo rule for padding_mode '{layer.attrs['padding_mode']}'"
    return None


def _pad_refuses(layer: LayerInfo) -> str | None:
    mode = layer.attrs.get("mode", "constant")
    return None if mode == "constant" else f"no halo rule for mode '{mode}'"


for _kind in ("conv2d", "maxpool2d", "avgpool2d"):
    HALO_RULES[_kind] = Rule(_sliding, _sliding_refuses)
for _kind in sorted(ELEMENTWISE_KINDS):
    HALO_RULES[_kind] = Rule(_pointwise)
HALO_RULES["channel_norm"] = Rule(_pointwise)  # per pixel, over its channels
HALO_RULES["pad"] = Rule(_explicit_pad, _pad_refuses)
HALO_RULES["reorg"] = Rule(_reorg)
HALO_RULES["upsample"] = Rule(_upsample, _upsample_refuses)
HALO_RULES["conv_transpose2d"] = Rule(_conv_transpose, _sliding_refuses)
HALO_RULES["pixel_shuffle"] = Rule(_pixel_shuffle)


def halo_rule(node: fx.Node) -> Rule:
    """The rule of a node's kind, or an error naming the node and why it cannot be split."""
    layer = node.meta.get("layer")
    if layer is None:
        raise HalocutError(f"node '{node.name}' has no layer analysis: run annotate_layers first")
    if layer.kind in WHOLE_INPUT:
        raise HalocutError(f"layer '{node.name}' ({layer.kind}) depends on its whole input and ends a "
                           f"spatially splittable region")
    rule = HALO_RULES.get(layer.kind)
    if rule is None:
        raise HalocutError(f"layer '{node.name}' ({layer.kind}: {layer.target}) has no halo rule")
    reason = rule.refuses(layer)
    if reason is not None:
        raise HalocutError(f"layer '{node.name}' ({layer.kind}): {reason}")
    return rule


def has_halo_rule(node: fx.Node) -> bool:
    """Whether a node can be tiled: a feature map out, and a halo rule that accepts its attributes."""
    layer = node.meta.get("layer")
    if layer is None or layer.kind == "size" or len(layer.output_shape) != 4:
        return False
    try:
        halo_rule(node)
    except HalocutError:
        return False
    return True


def compute_halos(volume: list[fx.Node], output_region: Region) -> dict[str, Region]:
    """Regions every node of a volume must produce, and every outside input it reads, for one tile.

    ``volume`` is in graph order and its last node is the one tiled. Returned
    regions are clipped to each tensor's bounds; the padding a rule asks for
    beyond them is re-derived when slicing.
    """
    last = volume[-1]
    height, width = _spatial(last)
    if output_region.is_empty():
        raise HalocutError(f"tile {output_region.to_json()} of '{last.name}' covers nothing")
    if output_region.clip(height, width) != output_region:
        raise HalocutError(f"tile {output_region.to_json()} lies outside '{last.name}' ({height}x{width})")
    needs: dict[str, Region] = {last.name: output_region}
    for node in reversed(volume):
        if node.name not in needs:
            raise HalocutError(f"node '{node.name}' of the volume feeds nothing inside it and is not its "
                               f"last node '{last.name}'")
        if node.meta["layer"].kind == "size":
            continue
        rule = halo_rule(node)
        for source in tensor_inputs(node):
            wanted = EMPTY if needs[node.name].is_empty() else \
                rule(node.meta["layer"], needs[node.name], _shape(source)).clip(*_spatial(source))
            needs[source.name] = needs[source.name].union(wanted) if source.name in needs else wanted
    return needs


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(getattr(node.meta.get("tensor_meta"), "shape", ()))


def _spatial(node: fx.Node) -> tuple[int, int]:
    shape = _shape(node)
    if len(shape) != 4:
        raise HalocutError(f"node '{node.name}' has shape {shape}, not (N, C, H, W): it cannot be tiled")
    return shape[2], shape[3]


def vertical_splitting_law(layers: list[tuple[int, int]], out_height: int) -> list[int]:
    """DistrEdge eqs. 1-2 on a chain of (filter size F, stride S): heights from the input to the output.

    >>> vertical_splitting_law([(3, 1), (3, 1), (2, 2)], 1)
    [6, 4, 2, 1]
    """
    heights = [out_height]
    for kernel, stride in reversed(layers):
        heights.append((heights[-1] - 1) * stride + kernel)
    return heights[::-1]
