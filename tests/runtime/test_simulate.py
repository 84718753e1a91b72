"""The simulator against timelines computed by hand, with a cost model where a layer costs FLOPs / peak."""

import pytest
from torch import nn

from halocut.ir.plan import Hop, Plan, Stage, Tile
from halocut.ir.regions import Region
from halocut.runtime.simulate import lower_bound, simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import parse_topology

from tests.support.plans import analysed


class FlopsOverPeak(CostModel):
    """Exactly FLOPs / peak per layer (a tile pays its share): easy to compute by hand."""

    def latency(self, device, layer, region=None, name=None, fused=False):
        share = 1.0 if region is None else region.height * region.width / (layer.output_shape[-2] * layer.output_shape[-1])
        return layer.flops * share / device.peak_flops


def figures(peak):
    return {"class": "cpu", "peak_flops": peak, "memory_bytes": 1e9, "memory_bandwidth_bytes_per_s": 1e9,
            "backend": "tvm-x86"}


CONV = 2 * 8 * 8 * 9  # FLOPs of a 1->1 channel 3x3 conv on 8x8
TENSOR = 8 * 8 * 4  # bytes of a 1x1x8x8 float32 tensor


@pytest.fixture(scope="module")
def two_convs():
    return analysed(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)), (1, 1, 8, 8))


def test_single_device(two_convs):
    topology = parse_topology({"name": "one", "devices": [{"name": "cam", "role": "requester",
                                                           "figures": figures(CONV)}], "links": []})
    plan = Plan("m", (1, 1, 8, 8), (Stage("single", ("_0", "_1"), device="cam"),))
    result = simulate(two_convs, plan, topology, FlopsOverPeak(), requests=4)
    assert result.latency_s == pytest.approx(2.0)          # two convs, 1 s each, no transfer
    assert result.throughput_ips == pytest.approx(0.5)
    assert result.busy_s == {"cam": pytest.approx(2.0)}
    assert [(i.resource, i.start_s, i.end_s) for i in result.timeline] == [("cam", 0.0, 2.0)]


def test_a_devices_dispatch_is_paid_by_every_part_it_runs(two_convs):
    """A testbed measures what the runtime costs a part (``dispatch``): each compute task on that device pays it."""
    topology = parse_topology({"name": "cut", "devices": [
        {"name": "cam", "role": "requester", "figures": figures(CONV), "dispatch": "250ms"},
        {"name": "srv", "role": "edge", "figures": figures(2 * CONV), "dispatch": 0.1}],
        "links": [{"between": ["cam", "srv"], "bandwidth": TENSOR * 8, "latency": 0.5}]})
    assert topology.device("cam").dispatch_s == pytest.approx(0.25)
    plan = Plan("m", (1, 1, 8, 8), (Stage("single", ("_0",), device="cam"), Stage("single", ("_1",), device="srv")))
    result = simulate(two_convs, plan, topology, FlopsOverPeak(), requests=1)
    assert result.latency_s == pytest.approx(1.25 + 1.5 + 0.6 + 1.5)  # test_two_device_cut plus 0.25 s and 0.1 s
    with pytest.raises(Exception, match="dispatch"):
        parse_topology({"name": "bad", "devices": [{"name": "cam", "role": "requester", "figures": figures(CONV),
                                                    "dispatch": "-1ms"}], "links": []})


def test_the_requesters_driver_submits_the_parts_one_at_a_time(two_convs):
    topology = parse_topology({"name": "cut", "devices": [
        {"name": "cam", "role": "requester", "figures": figures(CONV), "submit": "500ms"},
        {"name": "srv", "role": "edge", "figures": figures(2 * CONV)}],
        "links": [{"between": ["cam", "srv"], "bandwidth": TENSOR * 8, "latency": 0.5}]})
    plan = Plan("m", (1, 1, 8, 8), (Stage("single", ("_0",), device="cam"), Stage("single", ("_1",), device="srv")))
    result = simulate(two_convs, plan, topology, FlopsOverPeak(), requests=1)
    # cam's part is submitted by 0.5 s, runs to 1.5; the transfer to 3.0; srv's part (submitted by 1.0) to 3.5;
    # the output back by 5.0
    assert result.latency_s == pytest.approx(5.0)
    assert result.busy_s["(driver)"] == pytest.approx(1.0)
    with pytest.raises(Exception, match="only the requester submits"):
        parse_topology({"name": "bad", "devices": [{"name": "cam", "role": "requester", "figures": figures(CONV)},
                                                   {"name": "srv", "role": "edge", "figures": figures(CONV),
                                                    "submit": "1ms"}],
                        "links": [{"between": ["cam", "srv"], "bandwidth": "1Mbps"}]})


def test_two_device_cut(two_convs):
    topology = parse_topology({"name": "cut", "devices": [
        {"name": "cam", "role": "requester", "figures": figures(CONV)},
        {"name": "srv", "role": "edge", "figures": figures(2 * CONV)}],
        "links": [{"between": ["cam", "srv"], "bandwidth": TENSOR * 8, "latency": 0.5}]})
    plan = Plan("m", (1, 1, 8, 8), (Stage("single", ("_0",), device="cam"), Stage("single", ("_1",), device="srv")))
    result = simulate(two_convs, plan, topology, FlopsOverPeak(), requests=6)
    # conv on cam 1 s; 256 B at 256 B/s + 0.5 s; conv on srv 0.5 s; the output back: 1.5 s
    assert result.latency_s == pytest.approx(1.0 + 1.5 + 0.5 + 1.5)
    assert result.bytes_per_link == {"cam--srv": pytest.approx(2 * TENSOR)}
    timeline = sorted((i.resource, round(i.start_s, 6), round(i.end_s, 6)) for i in result.timeline)
    assert timeline == [("cam", 0.0, 1.0), ("cam--srv", 1.0, 2.5), ("cam--srv", 3.0, 4.5), ("srv", 2.5, 3.0)]
    # in a stream: cam 1 s, each direction of the link 1.5 s (one message at a time, latency included),
    # srv 0.5 s per request: the link's directions are the bottleneck
    assert result.throughput_ips == pytest.approx(1 / 1.5, rel=0.02)


def test_two_tiles_behind_a_shared_gateway_get_g_over_k(two_convs):
    one_conv = analysed(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), (1, 1, 8, 8))
    gateway_bps = 1280.0
    topology = parse_topology({"name": "coop", "devices": [
        {"name": "cam", "role": "requester", "figures": figures(CONV)},
        {"name": "gw", "role": "gateway"},
        {"name": "d0", "role": "device", "figures": figures(CONV / 2)},
        {"name": "d1", "role": "device", "figures": figures(CONV / 2)}],
        "media": [{"name": "air", "bandwidth": gateway_bps}],
        "links": [{"between": ["cam", "gw"], "bandwidth": 1e9},
                  {"between": ["gw", "d0"], "medium": "air"}, {"between": ["gw", "d1"], "medium": "air"}]})
    tiles = (Tile(Region((0, 4), (0, 8)), (Hop("d0"),)), Tile(Region((4, 8), (0, 8)), (Hop("d1"),)))
    plan = Plan("m", (1, 1, 8, 8), (Stage("spatial", ("_0",), tiles=tiles),))
    result = simulate(one_conv, plan, topology, FlopsOverPeak(), requests=1)
    tile_in_bits = 5 * 8 * 4 * 8  # 4 output rows + 1 halo row, 8 columns, float32
    tile_out_bits = 4 * 8 * 4 * 8
    expected = (2 * tile_in_bits / 1e9                       # both crops share cam--gw
                + tile_in_bits / (gateway_bps / 2)           # both share the medium: G/2 each
                + 1.0                                        # each tile: half the FLOPs at half the peak
                + tile_out_bits / (gateway_bps / 2)          # results back over the medium, G/2 each
                + 2 * tile_out_bits / 1e9)
    assert result.latency_s == pytest.approx(expected)
    assert result.busy_s["d0"] == pytest.approx(1.0) and result.busy_s["gw"] == 0.0
    assert result.bytes_per_link["gw--d0"] == pytest.approx((tile_in_bits + tile_out_bits) / 8)


def test_bandwidth_trace_slows_a_transfer(two_convs):
    def topology(trace):
        return parse_topology({"name": "t", "devices": [
            {"name": "cam", "role": "requester", "figures": figures(CONV)},
            {"name": "srv", "role": "edge", "figures": figures(CONV)}],
            "links": [{"between": ["cam", "srv"], "bandwidth": TENSOR * 8}], "trace": trace})
    plan = Plan("m", (1, 1, 8, 8), (Stage("single", ("_0",), device="cam"), Stage("single", ("_1",), device="srv")))
    steady = simulate(two_convs, plan, topology([]), FlopsOverPeak(), requests=1).latency_s
    # from t = 1.5 s the link runs at half speed: the first transfer (1 s .. 2 s) takes 0.5 s + 1 s
    halved = simulate(two_convs, plan, topology([{"target": "cam--srv", "at": 1.5, "bandwidth": TENSOR * 4}]),
                      FlopsOverPeak(), requests=1).latency_s
    assert steady == pytest.approx(1 + 1 + 1 + 1)
    assert halved == pytest.approx(1 + 1.5 + 1 + 2)


def test_lower_bound_is_below_every_plan(two_convs):
    topology = parse_topology({"name": "cut", "devices": [
        {"name": "cam", "role": "requester", "figures": figures(CONV)},
        {"name": "srv", "role": "edge", "figures": figures(3 * CONV)}],
        "links": [{"between": ["cam", "srv"], "bandwidth": 1e6, "latency": 0.01}]})
    bound = lower_bound(two_convs, topology)
    assert bound == pytest.approx(2 * CONV / (4 * CONV) + 0.01)
    for plan in [Plan("m", (1, 1, 8, 8), (Stage("single", ("_0", "_1"), device=d),)) for d in ("cam", "srv")]:
        assert simulate(two_convs, plan, topology, requests=1).latency_s >= bound


def test_a_later_hop_of_a_chain_receives_the_outside_values_it_reads():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.c2(self.c1(x)) + x

    graph = analysed(Residual(), (1, 1, 8, 8))
    topology = parse_topology({"name": "chain", "devices": [
        {"name": "cam", "role": "requester", "figures": figures(CONV)},
        {"name": "a", "role": "device", "figures": figures(CONV)},
        {"name": "b", "role": "device", "figures": figures(CONV)}],
        "links": [{"between": ["cam", "a"], "bandwidth": 1e6}, {"between": ["cam", "b"], "bandwidth": 1e6}]})
    tiles = (Tile(Region((0, 8), (0, 8)), (Hop("a", "c1"), Hop("b"))),)
    plan = Plan("m", (1, 1, 8, 8), (Stage("spatial", ("c1", "c2", "add"), tiles=tiles),))
    result = simulate(graph, plan, topology, FlopsOverPeak(), requests=1)
    # cam--b carries c1's output (relayed from a), x itself (read by the add on b), and the result back
    assert result.bytes_per_link == {"cam--a": pytest.approx(2 * TENSOR), "cam--b": pytest.approx(3 * TENSOR)}
