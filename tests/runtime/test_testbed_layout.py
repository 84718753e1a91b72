"""The testbed's layout (no root needed): names, addresses, per-link classes, routes through the topology's paths."""

import pytest

from halocut.ir.errors import HalocutError
from halocut.runtime.testbed.layout import check_name, plan_testbed
from halocut.targets.topology import load_topology
from tests.support import ROOT


def test_default_topology_layout():
    topology = load_topology(ROOT / "examples/topologies/default.yaml")
    bed = plan_testbed(topology, "t1")
    assert [m.namespace for m in bed.machines][0] == "halocut-t1-camera"
    assert len({m.address for m in bed.machines}) == len(topology.devices)
    wifi = next(s for s in bed.segments if s.name == "wifi")
    assert wifi.medium_bps == 200e6 and wifi.ifb is not None
    assert {m.machine for m in wifi.members} == {"camera", "pi-0", "pi-1", "nano-0"}
    assert len(bed.segments) == 3  # wifi, camera--edge, camera--cloud
    for segment in bed.segments:
        for member in segment.members:
            assert len(member.interface) <= 15 and len(member.port) <= 15
    # pi-0 reaches pi-1 through the camera (the topology's route), shaped at pi-0's own 100 Mbps link
    pi1 = bed.machine("pi-1").address
    route = next(r for r in bed.routes if r.machine == "pi-0" and r.destination == pi1)
    camera_on_wifi = next(m.address for m in wifi.members if m.machine == "camera")
    assert route.via == camera_on_wifi
    shaped = [c for owner, c in wifi.classes if owner == "pi-0"]
    assert len(shaped) == 1 and shaped[0].rate_bps == 100e6 and pi1 in shaped[0].destinations
    # the camera shapes each of its three wifi links separately, each for its own destination
    camera = [c for owner, c in wifi.classes if owner == "camera"]
    assert sorted(c.peer for c in camera) == ["nano-0", "pi-0", "pi-1"]
    assert all(len(c.destinations) == 1 for c in camera)
    # every machine has a route to every other
    assert len(bed.routes) == len(topology.devices) * (len(topology.devices) - 1)


def test_bad_name():
    with pytest.raises(HalocutError, match="--name"):
        check_name("Has Space")
