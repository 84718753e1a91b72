"""A volume's compute seconds from one walk back per end and running sums (planning speed, issue 12 item 8) equal
the direct sum over its members, on every volume of models with residuals, branches and fused pointwise ops."""

import numpy as np
import pytest

from halocut.compiler.prepare import prepare_model
from halocut.ir.ops import POINTWISE
from halocut.planning.search.boundary_dp import BoundarySearch
from halocut.planning.search.volume_cost import height
from halocut.targets.cost import CostModel, fusable
from halocut.targets.topology import load_topology
from tests.support import ROOT


def direct(search, start, end, anchor):
    """The definition: every member's seconds for the rows it computes, pointwise ops fused into a member."""
    volume = search.nodes[start:end]
    needs = search.tables.needs(volume, anchor)
    members = {n.name for n in volume}
    counted = [n for n in volume if n.meta.get("layer") is not None
               and not (n.meta["layer"].kind in POINTWISE and fusable(n, members))]
    rows = np.zeros((len(search.devices), height(volume[-1]) + 1))
    for k, key in enumerate(search.device_keys):
        for node in counted:
            rows[k] += search.tables.node_latency(node, key)[needs[node.name]]
    return rows


@pytest.mark.parametrize("model, shape, odd_starts", [("resnet18", (1, 3, 64, 64), True),
                                                      ("mobilenet_v3_small", (1, 3, 64, 64), True),
                                                      ("unet", None, False)])  # GroupNorm ends each of its volumes
def test_running_sums_equal_the_direct_sum_on_every_volume(model, shape, odd_starts):
    prepared = prepare_model(model, shape)
    topology = load_topology(ROOT / "examples/topologies/distredge-da.yaml")
    search = BoundarySearch(prepared.graph, topology, topology.compute_devices(), CostModel())
    volumes = [(i, j) for i in search.positions for j in search.positions if j > i and search.is_volume(i, j)]
    assert len(volumes) > 20
    # starts the DP never takes too: between a layer and the pointwise op fused into it
    fused_starts = [(i, j) for i in range(1, len(search.nodes)) for j in search.positions
                    if j > i and search.nodes[i].meta["layer"].kind in POINTWISE
                    and fusable(search.nodes[i], {search.nodes[i - 1].name}) and search.is_volume(i, j)]
    assert bool(fused_starts) is odd_starts
    volumes += fused_starts
    for i, j in volumes:
        for anchor in ("middle", "top", "bottom"):
            np.testing.assert_allclose(search.compute_stack(i, j, anchor), direct(search, i, j, anchor),
                                       rtol=1e-12, atol=0)
