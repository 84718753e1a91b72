"""Issue 12, item 2: ConvNeXt's channels-last blocks (permute -> LayerNorm -> Linear -> GELU -> Linear -> permute)
are pointwise in space; written channels-first they tile, and anything else between the permutes is left alone."""

import torch
import torch.nn.functional as F
from torch import fx, nn

from halocut.compiler.prepare import prepare_model
from halocut.ir.graph import compute_nodes
from halocut.ir.regions import Region
from halocut.passes.channels_first import channels_first
from halocut.passes.halo import has_halo_rule
from halocut.passes.slice import slice_stage
from halocut.runtime.reference import max_error


class Block(nn.Module):
    """torchvision's CNBlock and LayerNorm2d in one: F.layer_norm with get_attr weights, modules, a scale."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm, self.up, self.down = nn.LayerNorm(c, eps=1e-6), nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.scale = nn.Parameter(torch.rand(c, 1, 1))
        self.weight, self.bias = nn.Parameter(torch.rand(c)), nn.Parameter(torch.rand(c))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = torch.permute(self.down(F.gelu(self.up(self.norm(y)))), [0, 3, 1, 2])
        x = x + self.scale * y
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, (8,), self.weight, self.bias, 1e-6).permute(0, 3, 1, 2)


def test_channels_last_blocks_become_convolutions_and_channel_norms_that_tile():
    block = Block().eval()
    prepared = prepare_model(block, (1, 8, 12, 12))
    kinds = [n.meta["layer"].kind for n in compute_nodes(prepared.graph)]
    assert "permute" not in kinds and "linear" not in kinds and kinds.count("channel_norm") == 2
    nodes = compute_nodes(prepared.graph)
    assert all(has_halo_rule(n) for n in nodes)
    x = torch.randn(1, 8, 12, 12)
    tiles = [Region((0, 5), (0, 12)), Region((5, 12), (0, 7)), Region((5, 12), (7, 12))]
    with torch.no_grad():
        reference = block(x)
        out = torch.full_like(reference, float("nan"))
        for part in slice_stage(prepared.graph, [n.name for n in nodes], tiles):
            r = part.output_region
            crops = [x[:, :, c.rows[0]:c.rows[1], c.cols[0]:c.cols[1]] for _, c in part.inputs]
            out[:, :, r.rows[0]:r.rows[1], r.cols[0]:r.cols[1]] = part.module(*crops)
    error, allowed = max_error(out, reference)
    assert error <= allowed


class Attention(nn.Module):
    """Channels-last work that is not per pixel (a reshape mixing pixels), and a second user of the NHWC value."""

    def forward(self, x):
        y = x.permute(0, 2, 3, 1)
        mixed = y.reshape(1, -1, y.shape[-1]).softmax(1).reshape(y.shape).permute(0, 3, 1, 2)
        z = x.permute(0, 2, 3, 1)
        return mixed + (torch.relu(z) + z).permute(0, 3, 1, 2)


def test_chains_that_are_not_per_pixel_are_left_as_they_are():
    traced = fx.symbolic_trace(Attention())
    rewritten = channels_first(traced)
    assert [n.target for n in rewritten.graph.nodes] == [n.target for n in traced.graph.nodes]


def test_convnext_is_splittable_up_to_its_pooling_and_still_the_model():
    prepared = prepare_model("convnext_tiny", (1, 3, 64, 64))
    nodes = compute_nodes(prepared.graph)
    pooled = next(i for i, n in enumerate(nodes) if n.meta["layer"].kind == "adaptive_avgpool2d")
    assert all(has_halo_rule(n) for n in nodes[:pooled])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        error, allowed = max_error(prepared.graph(x), prepared.module(x))
    assert error <= allowed



def test_a_linear_head_right_after_a_spread_volume_is_planned():
    """Item 3 (met on convnext_tiny, whose Linear layers act on the last axis of a feature map): boundary_dp's
    fc_split raised IndexError when a linear segment followed a volume left spread over its tiles; the DP gathers
    a spread tensor by a single stage before an fc split."""
    from halocut.planning.search.boundary_dp import BoundarySearch
    from halocut.runtime.reference import verify_plan
    from halocut.targets.cost import CostModel
    from halocut.targets.topology import load_topology
    from tests.support import ROOT

    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).eval()  # linear over the last axis, W
    prepared = prepare_model(model, (1, 3, 32, 32))
    topology = load_topology(ROOT / "examples/topologies/distredge-da.yaml")
    search = BoundarySearch(prepared.graph, topology, topology.compute_devices(), CostModel())
    fc_starts = {i for i in search.positions for j in search.positions if j > i and search.is_fc(i, j)}
    assert any(search.is_volume(0, i) for i in fc_starts)  # a volume can end where the fc segment starts
    for variant in ("all", "gathered", "stages"):
        plan = search.plan("head", prepared.input_shape, variant)
        verify_plan(prepared.graph, plan, original=prepared.module)
