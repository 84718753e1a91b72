"""Issue 12, item 2: the halo rules users need beyond convolutions. Every interpolation mode halocut splits
(by scale and by size, with and without align_corners, up and down), ConvTranspose2d (strides wider than the
kernel, output_padding, groups, dilation) and pixel shuffle: any tiling reproduces the unsplit layer, and each
tile's last node keeps the layer's name (the manifest routes the model's output by it)."""

import random

import pytest
import torch
from torch import nn

from halocut.compiler.frontend import load_model
from halocut.ir.graph import compute_nodes
from halocut.ir.layers import annotate_layers
from halocut.ir.regions import Region
from halocut.passes.halo import has_halo_rule
from halocut.passes.slice import slice_stage
from halocut.runtime.reference import max_error
from tests.support.layers import Interpolate

C = 4


def tiles_reproduce(model: nn.Module, height: int, width: int, seed: int) -> None:
    shape = (1, C, height, width)
    gm = load_model(model.eval(), shape).graph_module
    annotate_layers(gm, shape)
    nodes = compute_nodes(gm)
    assert all(has_halo_rule(n) for n in nodes), [n.name for n in nodes if not has_halo_rule(n)]
    out_h, out_w = nodes[-1].meta["tensor_meta"].shape[-2:]
    rng = random.Random(seed)
    rows = [0, *sorted(rng.sample(range(1, out_h), min(3, out_h - 1))), out_h]
    cols = [0, *sorted(rng.sample(range(1, out_w), min(2, out_w - 1))), out_w]
    tiles = [Region((a, b), (c, d)) for a, b in zip(rows, rows[1:]) for c, d in zip(cols, cols[1:])]
    x = torch.randn(shape)
    with torch.no_grad():
        reference = gm(x)
        out = torch.full_like(reference, float("nan"))
        for part in slice_stage(gm, [n.name for n in nodes], tiles):
            assert [n.args[0].name for n in part.module.graph.nodes if n.op == "output"] == [nodes[-1].name]
            crops = [x[:, :, r.rows[0]:r.rows[1], r.cols[0]:r.cols[1]] for _, r in part.inputs]
            region = part.output_region
            out[:, :, region.rows[0]:region.rows[1], region.cols[0]:region.cols[1]] = part.module(*crops)
    error, allowed = max_error(out, reference)
    assert error <= allowed, (error, tiles)


RESIZES = [((23, 17), None), ((7, 40), None), (None, 0.5), (None, 0.75), (None, 1.5), (None, 2.0), (None, 3.0)]


@pytest.mark.parametrize("mode, corners", [("nearest", None), ("nearest-exact", None), ("bilinear", False),
                                           ("bilinear", True), ("bicubic", False), ("bicubic", True)])
def test_interpolation_by_scale_and_by_size_tiles_exactly(mode, corners):
    for seed, (size, scale) in enumerate(RESIZES):
        tiles_reproduce(nn.Sequential(nn.Conv2d(C, C, 3, padding=1), Interpolate(size, scale, mode, corners),
                                      nn.Conv2d(C, C, 3, padding=1)), 13, 11, seed)


@pytest.mark.parametrize("kernel, stride, padding, dilation, output_padding, groups", [
    (2, 2, 0, 1, 0, 1), (3, 2, 1, 1, 1, 2), (4, 2, 1, 1, 0, 4), (1, 3, 0, 1, 2, 1),  # 1x1 stride 3: rows of bias
    (3, 1, 1, 2, 0, 1), (5, 3, 2, 2, 2, 1), (2, 3, 0, 1, 1, 1)])
def test_conv_transpose_tiles_exactly(kernel, stride, padding, dilation, output_padding, groups):
    layer = nn.ConvTranspose2d(C, C, kernel, stride, padding, output_padding, groups=groups, dilation=dilation)
    tiles_reproduce(nn.Sequential(nn.Conv2d(C, C, 3, padding=1), layer, nn.ReLU()), 9, 8, kernel + stride)


def test_pixel_shuffle_and_upsampling_modules_tile_exactly():
    tiles_reproduce(nn.Sequential(nn.Conv2d(C, 4 * C, 3, padding=1), nn.PixelShuffle(2), nn.Conv2d(C, C, 3)), 9, 8, 1)
    tiles_reproduce(nn.Sequential(nn.UpsamplingBilinear2d(scale_factor=2), nn.Conv2d(C, C, 3)), 7, 9, 2)
    tiles_reproduce(nn.Sequential(nn.Upsample(size=(10, 5), mode="bicubic"), nn.Conv2d(C, C, 3)), 7, 9, 3)
