"""Property: any tiling of any random conv/pool stack reproduces the unsplit stack (design.md tolerance)."""

import math

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from halocut.compiler.frontend import load_model
from halocut.ir.graph import compute_nodes
from halocut.ir.layers import annotate_layers
from halocut.ir.regions import Region
from halocut.passes.slice import slice_stage
from halocut.runtime.reference import max_error
from tests.support.layers import Interpolate

CHANNELS = 4


class Residual(nn.Module):
    def __init__(self, kernel: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(CHANNELS, CHANNELS, kernel, padding=dilation * (kernel // 2), dilation=dilation)

    def forward(self, x):
        return F.relu(x + self.conv(x))


class Pad(nn.Module):
    def __init__(self, pads):
        super().__init__()
        self.pads = pads

    def forward(self, x):
        return F.pad(x, self.pads)


def pool_size(size, kernel, stride, pad, dilation, ceil_mode):
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@st.composite
def layer_stack(draw):
    height, width = draw(st.integers(6, 36)), draw(st.integers(6, 36))
    layers, shape = [], (height, width)
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "conv", "max", "avg", "pad", "res", "relu", "up", "up", "convT",
                                     "shuffle"]))
        k, s, d = draw(st.integers(1, 7)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        if kind == "conv":
            p = draw(st.integers(0, 3))
            g = draw(st.sampled_from([1, 2, 4]))
            new = tuple(pool_size(x, k, s, p, d, False) for x in shape)
            layer = nn.Conv2d(CHANNELS, CHANNELS, k, s, p, d, groups=g, bias=draw(st.booleans()))
        elif kind in ("max", "avg"):
            k = min(k, 4)
            d = 1 if kind == "avg" else min(d, 2)
            p = draw(st.integers(0, k // 2))
            ceil = draw(st.booleans())
            new = tuple(pool_size(x, k, s, p, d, ceil) for x in shape)
            layer = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil) if kind == "max" else \
                nn.AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=draw(st.booleans()))
        elif kind == "pad":
            pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
            new = (shape[0] + pads[2] + pads[3], shape[1] + pads[0] + pads[1])
            layer = Pad(pads)
        elif kind == "res":
            new, layer = shape, Residual(k if k % 2 else k - 1 or 1, d)
        elif kind == "up":
            mode = draw(st.sampled_from(["nearest", "nearest-exact", "bilinear", "bicubic"]))
            corners = draw(st.booleans()) if mode in ("bilinear", "bicubic") else None
            if draw(st.booleans()):
                size, scale = tuple(draw(st.integers(max(1, x // 2), 2 * x + 1)) for x in shape), None
                new = size
            else:
                size, scale = None, draw(st.sampled_from([0.5, 0.75, 1.5, 2.0, 2.5, 3.0]))
                new = tuple(math.floor(x * scale) for x in shape)
            layer = Interpolate(size, scale, mode, corners)
        elif kind == "convT":
            k, s, d = min(k, 5), draw(st.integers(1, 3)), min(d, 2)
            p, op = draw(st.integers(0, (d * (k - 1)) // 2)), draw(st.integers(0, max(s, d) - 1))
            g = draw(st.sampled_from([1, 2, 4]))
            new = tuple((x - 1) * s - 2 * p + d * (k - 1) + op + 1 for x in shape)
            layer = nn.ConvTranspose2d(CHANNELS, CHANNELS, k, s, p, op, groups=g, bias=draw(st.booleans()),
                                       dilation=d)
        elif kind == "shuffle":
            new = tuple(2 * x for x in shape)
            layer = nn.Sequential(nn.Conv2d(CHANNELS, 4 * CHANNELS, 1), nn.PixelShuffle(2))
        else:
            new, layer = shape, nn.ReLU()
        if min(new) < 1 or max(new) > 48:
            continue
        layers.append(layer)
        shape = new
    return nn.Sequential(*layers) if layers else nn.Sequential(nn.ReLU()), (height, width)


def cuts(draw, size, most):
    return sorted(draw(st.sets(st.integers(1, size - 1), max_size=min(most, size - 1)))) if size > 1 else []


@settings(max_examples=220, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_stack(), st.data())
def test_random_stacks_and_tilings_are_equivalent(stack, data):
    model, (height, width) = stack
    shape = (1, CHANNELS, height, width)
    loaded = load_model(model, shape)
    gm = loaded.graph_module
    annotate_layers(gm, shape)
    volume = [n.name for n in compute_nodes(gm)]
    out_height, out_width = gm.graph.find_nodes(op="output")[0].args[0].meta["tensor_meta"].shape[-2:]
    rows = [0, *cuts(data.draw, out_height, 7), out_height]
    cols = [0, *cuts(data.draw, out_width, data.draw(st.sampled_from([0, 0, 1, 3]))), out_width]
    tiles = [Region((r0, r1), (c0, c1)) for r0, r1 in zip(rows, rows[1:]) for c0, c1 in zip(cols, cols[1:])]
    x = torch.randn(shape)
    with torch.no_grad():
        reference = gm(x)
        out = torch.full_like(reference, float("nan"))
        for part in slice_stage(gm, volume, tiles):
            crops = [x[:, :, r.rows[0]:r.rows[1], r.cols[0]:r.cols[1]] for _, r in part.inputs]
            region = part.output_region
            out[:, :, region.rows[0]:region.rows[1], region.cols[0]:region.cols[1]] = part.module(*crops)
    error, allowed = max_error(out, reference)
    assert error <= allowed, (error, tiles)


def test_a_pool_window_wholly_in_the_padding_is_minus_infinity_in_tiles_too():
    """Found by the property test: dilation 2 over a 1x1 map sees only padding; both sides give -inf."""
    model = nn.Sequential(nn.Conv2d(CHANNELS, CHANNELS, 3, dilation=3),
                          nn.MaxPool2d(kernel_size=2, stride=1, padding=1, dilation=2))
    shape = (1, CHANNELS, 7, 7)
    loaded = load_model(model, shape)
    annotate_layers(loaded.graph_module, shape)
    volume = [n.name for n in compute_nodes(loaded.graph_module)]
    x = torch.randn(shape)
    (part,) = slice_stage(loaded.graph_module, volume, [Region((0, 1), (0, 1))])
    with torch.no_grad():
        reference = loaded.graph_module(x)
        tile = part.module(*[x for _ in part.inputs])
    assert torch.isneginf(reference).all() and torch.equal(tile, reference)
    error, allowed = max_error(tile, reference)
    assert error == 0.0 and allowed == 1e-4
