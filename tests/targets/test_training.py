"""The training cost model: the catalog estimate (backward about 2x forward, update by parameter bytes),
measured training profiles in the profile family topologies point at, HierTrain's three workers, link
prices and the messages of one iteration."""

import json

import pytest

from halocut.compiler.commands import training_model
from halocut.ir.errors import HalocutError
from halocut.targets.topology import catalog_device, load_topology, parse_topology
from halocut.targets.training import (Schedule, estimate_training, hiertrain_workers, link_bytes, messages,
                                      training_costs, training_table)

from tests.support import ROOT

TOPOLOGY = ROOT / "examples/topologies/hiertrain-1core.yaml"


def test_estimates_backward_twice_forward_update_by_parameter_bytes():
    trained = training_model("lenet5")
    pi = catalog_device("rpi3b")
    table = estimate_training(pi, trained.graph, trained.groups, 32)
    assert table.source == "analytic"
    ratios = [b / f for f, b in zip(table.forward_s, table.backward_s)]
    assert 1.0 <= ratios[0] < 1.5 and all(1.5 < r <= 2.0 for r in ratios[1:])  # the first conv: no input gradient
    biggest = max(range(5), key=lambda i: trained.groups[i].param_bytes)
    assert table.update_s[biggest] == max(table.update_s)  # fc1: 192 kB of parameters
    small = estimate_training(pi, trained.graph, trained.groups, 1)
    assert all(a > b for a, b in zip(small.forward_s, table.forward_s))  # per-sample cost falls with the batch
    gpu = estimate_training(catalog_device("gtx-1080ti"), trained.graph, trained.groups, 32)
    assert sum(gpu.forward_s) * 20 < sum(table.forward_s)


def test_a_measured_training_profile_is_used_where_it_fits(tmp_path):
    trained = training_model("lenet5")
    groups = [{"name": g.name, "forward_s_per_sample": 1e-3 * (i + 1), "backward_s_per_sample": 2e-3,
               "update_s": 5e-4} for i, g in enumerate(trained.groups)]
    figures = {"class": "cpu", "peak_flops": 1e10, "memory_bytes": 1e9, "memory_bandwidth_bytes_per_s": 1e10,
               "backend": "torch"}
    (tmp_path / "edge.json").write_text(json.dumps({"format": "halocut-profile/1", "device_figures": figures,
                                                    "layers": {}, "training": {"model": "lenet5", "groups": groups}}))
    topology = parse_topology({"name": "t", "devices": [
        {"name": "device", "role": "requester", "kind": "rpi3b"},
        {"name": "edge", "role": "edge", "profile": "edge.json"},
        {"name": "cloud", "role": "cloud", "kind": "gtx-1080ti"}],
        "links": [{"between": ["device", "edge"], "bandwidth": "5Mbps"},
                  {"between": ["edge", "cloud"], "bandwidth": "3Mbps"}]}, "t.yaml", tmp_path)
    measured = training_table(topology.device("edge"), trained.graph, trained.groups, "lenet5", 32)
    assert measured.forward_s == (1e-3, 2e-3, 3e-3, 4e-3, 5e-3) and measured.source.startswith("profile")
    other = training_model("examples/models/hiertrain.py:vgg_small")
    fallback = training_table(topology.device("edge"), other.graph, other.groups, other.name, 32)
    assert fallback.source == "analytic"  # another model: the profile's figures, analytic


def test_three_roles_are_required():
    topology = load_topology(TOPOLOGY)
    assert hiertrain_workers(topology) == {"device": "device", "edge": "edge", "cloud": "cloud"}
    no_cloud = parse_topology({"name": "two", "devices": [{"name": "d", "role": "requester", "kind": "rpi3b"},
                                                          {"name": "e", "role": "edge", "kind": "intel-nuc"}],
                               "links": [{"between": ["d", "e"], "bandwidth": "5Mbps"}]})
    with pytest.raises(HalocutError, match="topology 'two': HierTrain needs exactly one cloud machine .*found 0"):
        hiertrain_workers(no_cloud)
    default = load_topology(ROOT / "examples/topologies/default.yaml")
    assert hiertrain_workers(default)["edge"] == "edge"  # the boards have role device: not workers


def test_messages_and_link_bytes_of_a_schedule():
    trained = training_model("lenet5")
    topology = load_topology(TOPOLOGY)
    costs = training_costs(topology, trained.graph, trained.groups, trained.name, 10, trained.sample_bytes)
    schedule = Schedule(("cloud", "device", "edge"), 1, 3, (4, 3, 3))
    found = messages(costs, schedule)
    q, mp1, mp3 = 3072, trained.groups[0].param_bytes, sum(g.param_bytes for g in trained.groups[:3])
    assert {(m.source, m.target, m.what): m.size_bytes for m in found} == {
        ("device", "cloud", "samples"): 4 * q, ("device", "edge", "samples"): 3 * q,
        ("device", "cloud", "activations"): 3 * 4704, ("cloud", "device", "activation gradients"): 3 * 4704,
        ("device", "cloud", "weight gradients"): mp1, ("cloud", "device", "averaged gradients"): mp1,
        ("edge", "cloud", "activations"): 3 * 480, ("cloud", "edge", "activation gradients"): 3 * 480,
        ("edge", "cloud", "weight gradients"): mp3, ("cloud", "edge", "averaged gradients"): mp3}
    per_link = link_bytes(topology, costs, found)
    assert per_link["device--edge"] == sum(m.size_bytes for m in found if "device" in (m.source, m.target))
    compressed = training_costs(topology, trained.graph, trained.groups, trained.name, 10, q, compress_bits=8)
    shrunk = link_bytes(topology, compressed, found)
    forward = sum(m.size_bytes for m in found
                  if m.forward and "edge--cloud" in {link.key for link in topology.route(m.source, m.target)})
    assert per_link["edge--cloud"] - shrunk["edge--cloud"] == pytest.approx(forward * 0.75)
    with pytest.raises(HalocutError, match="compress bits 0"):
        training_costs(topology, trained.graph, trained.groups, trained.name, 10, q, compress_bits=0)
