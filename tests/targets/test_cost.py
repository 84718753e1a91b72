"""The cost model: calibrated against published latencies, nonlinear in layer shape, profiles interpolated."""

import json

import pytest

from halocut.compiler.prepare import deployed_graph
from halocut.ir.layers import LayerInfo
from halocut.ir.regions import Region
from halocut.targets.cost import CostModel, analytic_latency
from halocut.targets.predict import predict_model_latency
from halocut.targets.published import PUBLISHED
from halocut.targets.topology import Link, catalog_device, parse_topology


@pytest.mark.parametrize("row", PUBLISHED, ids=[f"{p.kind}-{p.model}" for p in PUBLISHED])
def test_whole_model_predictions_within_a_factor_1_5_of_published(row):
    predicted = predict_model_latency(catalog_device(row.kind), deployed_graph(row.model, row.input_size))
    assert 1 / 1.5 <= predicted / row.latency_s <= 1.5, (predicted, row)


def conv(c_in, c_out, size, kernel=3, groups=1):
    flops = 2 * c_out * size * size * (c_in // groups) * kernel * kernel
    return LayerInfo("conv2d", "c", {"kernel": (kernel, kernel), "groups": groups, "in_channels": c_in,
                                     "out_channels": c_out, "stride": (1, 1), "padding": (1, 1, 1, 1)},
                     ((1, c_in, size, size),), ((1, c_out, size, size),), flops=flops, params=0,
                     param_bytes=4 * c_out * c_in // groups * kernel * kernel, output_bytes=4 * c_out * size * size)


@pytest.mark.parametrize("kind", ["rpi4", "jetson-nano", "tesla-t4"])
def test_efficiency_depends_on_shape(kind):
    device = catalog_device(kind)

    def flops_per_s(layer, region=None):
        share = 1.0 if region is None else region.height * region.width / layer.output_shape[-1] ** 2
        return layer.flops * share / analytic_latency(device, layer, region)

    dense, depthwise = conv(256, 256, 28), conv(256, 256, 28, groups=256)
    assert flops_per_s(depthwise) < 0.5 * flops_per_s(dense)
    one_row = Region((0, 1), (0, 28))
    assert flops_per_s(dense, one_row) < 0.8 * flops_per_s(dense)
    assert flops_per_s(conv(16, 16, 28)) < flops_per_s(dense)


def test_profile_table_is_interpolated_and_falls_back(tmp_path):
    layer = conv(8, 8, 16)
    profile = {"format": "halocut-profile/1", "device_figures": {
        "class": "cpu", "peak_flops": 1e10, "memory_bytes": 1e9, "memory_bandwidth_bytes_per_s": 1e9,
        "backend": "tvm-x86"},
        "layers": {"conv": {"kind": "conv2d", "output_shape": [1, 8, 16, 16], "latency_s": 0.016,
                            "heights": {"1": 0.002, "4": 0.005, "16": 0.016}}}}
    (tmp_path / "p.json").write_text(json.dumps(profile))
    topology = parse_topology({"name": "p", "devices": [{"name": "me", "role": "requester", "profile": "p.json"}],
                               "links": []}, "p.yaml", tmp_path)
    device = topology.device("me")
    model = CostModel()
    assert model.latency(device, layer, None, "conv") == 0.016
    assert model.latency(device, layer, Region((0, 2), (0, 16)), "conv") == pytest.approx(0.003)
    assert model.latency(device, layer, Region((0, 10), (0, 8)), "conv") == pytest.approx(0.5 * (0.005 + 0.011 * 6 / 12))
    assert model.latency(device, layer, None, "another") == pytest.approx(analytic_latency(device, layer))


def test_link_cost_is_latency_plus_bits_over_bandwidth_plus_overhead():
    link = Link("a", "b", bandwidth_bps=100e6, latency_s=5e-3, overhead_s=1e-3)
    assert link.transfer_s(1_000_000) == pytest.approx(5e-3 + 1e-3 + 8e6 / 100e6)
