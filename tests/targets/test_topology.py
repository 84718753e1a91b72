"""Topology files: the examples load, and each kind of mistake gives its one-line error."""

import copy
from pathlib import Path

import pytest
import yaml

from halocut.ir.errors import HalocutError
from halocut.targets.topology import load_catalog, load_topology, parse_topology

from tests.support import ROOT

EXAMPLES = sorted((ROOT / "examples" / "topologies").glob("*.yaml"))


def test_there_are_the_papers_topologies():
    names = {p.stem for p in EXAMPLES}
    assert {"distredge-da", "distredge-db", "distredge-dc", "distredge-na", "distredge-nd", "distredge-la",
            "distredge-ld", "coopai-rpi4x1", "coopai-rpi4x10", "deepar", "mw", "hiertrain", "default"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_load_and_every_device_has_a_route_from_the_requester(path):
    topology = load_topology(path)
    requester = topology.requester.name
    for device in topology.devices:
        route = topology.route(requester, device.name)
        assert (device.name == requester) == (route == [])
    assert topology.compute_devices()


def test_large_distredge_groups_have_sixteen_providers():
    for group in ("la", "lb", "lc", "ld"):
        topology = load_topology(ROOT / f"examples/topologies/distredge-{group}.yaml")
        assert sum(d.role != "requester" for d in topology.devices) == 16


def test_shannon_link_rate_and_shared_medium():
    mw = load_topology(ROOT / "examples/topologies/mw.yaml")
    (link,) = mw.links
    assert link.bandwidth_bps == pytest.approx(5e6 * __import__("math").log2(1 + 0.1 * 1e-6 / 1e-9))
    coop = load_topology(ROOT / "examples/topologies/coopai-rpi4x4.yaml")
    assert {m.name: m.bandwidth_bps for m in coop.media} == {"gateway": 100e6}


def test_catalog_has_every_required_kind_with_sources():
    catalog = load_catalog()
    required = {"rpi3b", "rpi4", "jetson-nano", "jetson-tx2", "jetson-xavier-nx", "jetson-agx-xavier",
                "jetson-orin-nano", "jetson-agx-orin", "intel-nuc", "desktop-i7", "gtx-1080ti", "tesla-k80",
                "tesla-t4", "tesla-v100", "a100", "h100"}
    assert required <= set(catalog)
    for kind, entry in catalog.items():
        assert entry["backend"] in ("tvm-aarch64", "tvm-x86", "tensorrt-onnx", "cuda")
        assert (entry["cuda_arch"] is None) == (entry["class"] == "cpu") or entry["backend"] == "tensorrt-onnx"
        for figure in ("peak_flops", "memory_bytes", "memory_bandwidth_bytes_per_s"):
            assert float(entry[figure]) > 0 and entry["sources"][figure], (kind, figure)


GOOD = {
    "name": "t",
    "devices": [{"name": "cam", "role": "requester", "kind": "rpi4"},
                {"name": "nano", "role": "device", "kind": "jetson-nano"},
                {"name": "gw", "role": "gateway"}],
    "links": [{"between": ["cam", "gw"], "bandwidth": "100Mbps", "latency": "2ms"},
              {"between": ["gw", "nano"], "medium": "air"}],
    "media": [{"name": "air", "bandwidth": "50Mbps"}],
}


def edit(change):
    data = copy.deepcopy(GOOD)
    change(data)
    return data


BAD = [
    (lambda d: d["devices"][1].update(kind="rpi5"), r"t.yaml: devices\[1\].kind: unknown kind 'rpi5'; known: a100"),
    (lambda d: d["links"][0].update(bandwidth="-5Mbps"), r"links\[0\].bandwidth: bandwidth must be positive, got -5Mbps"),
    (lambda d: d["links"][0].update(bandwidth="fast"), r"links\[0\].bandwidth: 'fast' is not a data rate"),
    (lambda d: d["links"].pop(1), r"device 'nano' is not reachable from the requester 'cam'"),
    (lambda d: d["devices"].append({"name": "nano", "role": "edge", "kind": "rpi4"}), "devices: duplicate device 'nano'"),
    (lambda d: d["links"][0].update(between=["cam", "ghost"]), r"links\[0\].between: unknown device 'ghost'"),
    (lambda d: d["links"][1].update(medium="ether"), r"links\[1\].medium: unknown medium 'ether'; media: air"),
    (lambda d: d["devices"][0].update(role="device"), "expected exactly one requester, found 0"),
    (lambda d: d["devices"][1].pop("kind"), r"devices\[1\] \('nano'\): needs a kind, figures or profile"),
    (lambda d: d["devices"][1].update(role="boss"), r"devices\[1\].role: 'boss' is not one of"),
    (lambda d: d["links"][0].update(latency="-1ms"), r"links\[0\].latency: must not be negative"),
    (lambda d: d["devices"][1].update(profile="p.json"), r"devices\[1\]: give one of kind, figures or profile"),
    (lambda d: d["devices"][1].update(name="Nano 0"), r"devices\[1\].name: 'Nano 0' does not match"),
    (lambda d: d["links"].append({"between": ["gw", "cam"], "bandwidth": "1Gbps"}), "duplicate link 'cam -- gw'"),
    (lambda d: d.update(trace=[{"target": "cam--nano", "at": "1s", "bandwidth": "1Mbps"}]),
     r"trace\[0\].target: 'cam--nano' is neither a link"),
    (lambda d: d["devices"][1].update(kind=None) or d["devices"][1].pop("kind") or d["devices"][1].update(
        figures={"class": "gpu", "peak_flops": 0, "memory_bytes": 1, "memory_bandwidth_bytes_per_s": 1,
                 "backend": "cuda"}), r"devices\[1\].figures.peak_flops: must be positive"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_bad_topologies_give_one_line_errors(change, message):
    with pytest.raises(HalocutError, match=message) as error:
        parse_topology(edit(change), "t.yaml")
    assert "\n" not in str(error.value)


def test_good_topology_and_file_errors(tmp_path):
    topology = parse_topology(copy.deepcopy(GOOD), "t.yaml")
    assert [link.key for link in topology.route("cam", "nano")] == ["cam--gw", "gw--nano"]
    assert topology.links[1].bandwidth_bps == 50e6
    with pytest.raises(HalocutError, match="missing.yaml: file does not exist"):
        load_topology(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("devices: [unclosed\n")
    with pytest.raises(HalocutError, match="bad.yaml: not valid YAML"):
        load_topology(tmp_path / "bad.yaml")
    (tmp_path / "prof.yaml").write_text(yaml.safe_dump(edit(lambda d: d["devices"][1].pop("kind") and
                                                            d["devices"][1].update(profile="nowhere.json"))))
    with pytest.raises(HalocutError, match=r"profile '.*nowhere.json' does not exist"):
        load_topology(tmp_path / "prof.yaml")
    assert Path(tmp_path).exists()


def test_a_huge_or_undecodable_topology_is_refused_before_it_is_parsed(tmp_path):
    """Issue 18, items 7 and 18: a 32 MB topology took 7.5 minutes to be refused by its schema; the one reader
    refuses it by size at once, and bytes that are not UTF-8 or JSON in a profile are one line each."""
    import time

    from halocut.targets.topology import MAX_TOPOLOGY_BYTES

    huge = tmp_path / "huge.yaml"
    huge.write_text("name: huge\ndevices:\n" + "  - {name: d, role: device, kind: rpi4}\n" *
                    (MAX_TOPOLOGY_BYTES // 30))
    start = time.monotonic()
    with pytest.raises(HalocutError, match=rf"huge.yaml: \d+ bytes, more than the {MAX_TOPOLOGY_BYTES} this file"):
        load_topology(huge)
    assert time.monotonic() - start < 5
    (tmp_path / "latin.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(HalocutError, match=r"latin.yaml: not UTF-8 text \(byte 9 is 0xe9\)"):
        load_topology(tmp_path / "latin.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "prof.yaml").write_text(yaml.safe_dump(edit(lambda d: d["devices"][1].pop("kind") and
                                                            d["devices"][1].update(profile="list.json"))))
    with pytest.raises(HalocutError, match=r"profile .*list.json: the top level is a list, expected an object"):
        load_topology(tmp_path / "prof.yaml")
