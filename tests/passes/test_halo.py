"""Exact halo sizes: hand-computed cases and DistrEdge's Vertical-Splitting Law (paper 003, eqs. 1-2)."""

import pytest
from torch import nn

from halocut.compiler.frontend import load_model
from halocut.ir.errors import HalocutError
from halocut.ir.layers import annotate_layers
from halocut.ir.regions import Region
from halocut.passes.halo import compute_halos, vertical_splitting_law

from tests.support.plans import analysed


def volume(module, shape, upto=None):
    loaded = load_model(module, shape)
    gm = loaded.graph_module
    annotate_layers(gm, shape)
    nodes = [n for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    if upto is not None:
        nodes = nodes[:[n.name for n in nodes].index(upto) + 1]
    return gm, nodes


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_n_same_padded_3x3_layers_need_n_rows_of_halo_on_each_inner_side(depth):
    model = nn.Sequential(*[nn.Conv2d(2, 2, 3, padding=1) for _ in range(depth)])
    gm, nodes = volume(model, (1, 2, 40, 40))
    needs = compute_halos(nodes, Region((10, 20), (0, 40)))
    assert needs["input_1"] == Region((10 - depth, 20 + depth), (0, 40))
    top = compute_halos(nodes, Region((0, 10), (0, 40)))["input_1"]
    assert top == Region((0, 10 + depth), (0, 40))  # the border side is padding, not halo
    grid = compute_halos(nodes, Region((10, 20), (5, 9)))["input_1"]
    assert grid == Region((10 - depth, 20 + depth), (5 - depth, 9 + depth))
    for i, node in enumerate(nodes[:-1]):  # each inner layer needs one row less than the one before it
        assert needs[node.name].rows == (10 - (depth - 1 - i), 20 + (depth - 1 - i))


def test_vgg16_first_volume_follows_distredge_eqs_1_and_2():
    gm = analysed("vgg16", (1, 3, 224, 224))
    nodes = [n for n in gm.graph.nodes if n.op == "call_module"][:5]  # conv1_1, relu, conv1_2, relu, pool1
    assert [n.name for n in nodes] == ["features_0", "features_1", "features_2", "features_3", "features_4"]
    out_rows = (10, 20)
    needs = compute_halos(nodes, Region(out_rows, (0, 112)))
    # eq. 1: h_out^{i} = (h_out^{i+1} - 1) S_{i+1} + F_{i+1};  eq. 2: h_in = (h_out^1 - 1) S_1 + F_1
    h_pool = 20 - 10
    h_conv2 = (h_pool - 1) * 2 + 2          # pool1: F=2, S=2
    h_conv1 = (h_conv2 - 1) * 1 + 3         # conv1_2: F=3, S=1
    h_in = (h_conv1 - 1) * 1 + 3            # conv1_1: F=3, S=1
    assert vertical_splitting_law([(3, 1), (3, 1), (2, 2)], h_pool) == [h_in, h_conv1, h_conv2, h_pool]
    assert needs["features_2"].height == h_conv2 == 20
    assert needs["features_0"].height == h_conv1 == 22
    assert needs["x"].height == h_in == 24
    assert needs["x"].rows == (2 * 10 - 2, 2 * 20 + 2)  # padding 1 on each conv: shifted by 2


def test_strided_dilated_and_asymmetric_padding_rules():
    model = nn.Sequential(nn.ZeroPad2d((0, 0, 2, 1)), nn.Conv2d(1, 1, 3, stride=2, dilation=2),
                          nn.MaxPool2d(3, 2, padding=1, ceil_mode=True))
    gm, nodes = volume(model, (1, 1, 33, 33))
    needs = compute_halos(nodes, Region((1, 3), (0, 1)))
    # pool rows 1..2 read conv rows [1*2-1, 2*2-1+3) = [1, 6); conv rows [1, 6) read padded rows
    # [2, 5*2 + 2*2 + 1) = [2, 15); the pad shifts by its top 2 rows: input rows [0, 13)
    assert needs["_1"].rows == (1, 6)
    assert needs["_0"].rows == (2, 15)
    assert needs["input_1"].rows == (0, 13)


def test_branches_take_the_union_of_their_consumers_needs():
    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.small, self.big = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 5, padding=2)

        def forward(self, x):
            return self.small(x) + self.big(x)

    gm, nodes = volume(TwoBranches(), (1, 1, 20, 20))
    assert compute_halos(nodes, Region((5, 8), (0, 20)))["x"].rows == (3, 10)


def test_ops_with_no_rule_or_whole_input_dependence_are_errors():
    gm, nodes = volume(nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(2)), (1, 1, 8, 8))
    with pytest.raises(HalocutError, match=r"layer '_1' \(adaptive_avgpool2d\) depends on its whole input"):
        compute_halos(nodes, Region((0, 1), (0, 2)))
    gm, nodes = volume(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2, mode="area")), (1, 1, 8, 8))
    with pytest.raises(HalocutError, match="no halo rule for mode 'area'"):
        compute_halos(nodes, Region((0, 4), (0, 12)))


def test_tiles_outside_or_empty_are_errors():
    gm, nodes = volume(nn.Sequential(nn.Conv2d(1, 1, 3)), (1, 1, 8, 8))
    with pytest.raises(HalocutError, match="covers nothing"):
        compute_halos(nodes, Region((3, 3), (0, 6)))
    with pytest.raises(HalocutError, match=r"lies outside '_0' \(6x6\)"):
        compute_halos(nodes, Region((4, 7), (0, 6)))
