"""What a testbed is made of, decided from the topology alone (no root needed): names, addresses, routes, rates.

Every machine gets a namespace ``halocut-<testbed>-<machine>`` with a host address on its loopback
(``10.99.0.<i+1>``, what its Ray node listens on). Every link without a medium, and every medium, is a
segment: a bridge in the testbed's hub namespace with one veth per machine on it. A machine's veth into a
segment carries an htb class per link of its own on that segment at the link's bandwidth, chosen by the
destination host address whose route (:meth:`Topology.route`) starts on that link; a medium is shaped once
more for everyone on it, by an ifb in the hub that takes in every port's ingress. Multi-hop paths are host
routes through the next machine on the topology's route (which forwards).

>>> from halocut.targets.topology import parse_topology
>>> t = parse_topology({"name": "t", "devices": [{"name": "a", "role": "requester", "kind": "rpi4"},
...     {"name": "b", "role": "edge", "kind": "rpi4"}], "links": [{"between": ["a", "b"], "bandwidth": "5Mbps"}]})
>>> bed = plan_testbed(t, "demo")
>>> bed.machines[1].namespace, bed.machines[1].address, bed.segments[0].classes[0][1].rate_bps
('halocut-demo-b', '10.99.0.2', 5000000.0)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from halocut.ir.errors import HalocutError
from halocut.targets.topology import Topology

PREFIX = "halocut"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")


@dataclass(frozen=True)
class Machine:
    index: int
    name: str
    namespace: str
    address: str  # host address on its loopback; its Ray node's --node-ip-address


@dataclass(frozen=True)
class Shaped:
    """One htb class on a member's veth: the link's rate for the destinations routed over it."""

    link: str  # "a--b"
    peer: str  # the machine at the other end
    rate_bps: float
    destinations: tuple[str, ...]  # host addresses


@dataclass(frozen=True)
class Member:
    machine: str
    interface: str  # in the machine's namespace
    port: str  # in the hub, on the bridge
    address: str  # on the segment's subnet


@dataclass(frozen=True)
class Segment:
    index: int
    name: str  # the medium's name, or the link's key
    bridge: str
    medium_bps: float | None  # shaped once for everyone (an ifb in the hub)
    ifb: str | None
    members: tuple[Member, ...]
    classes: tuple[tuple[str, Shaped], ...] = ()  # (member machine, class)


@dataclass(frozen=True)
class Route:
    machine: str
    destination: str  # host address
    via: str  # the next machine's address on the segment
    interface: str


@dataclass(frozen=True)
class Layout:
    name: str
    tag: str  # 4 hex characters in every interface name
    hub: str
    machines: tuple[Machine, ...]
    segments: tuple[Segment, ...]
    routes: tuple[Route, ...]

    def machine(self, name: str) -> Machine:
        return next(m for m in self.machines if m.name == name)

    @property
    def namespaces(self) -> list[str]:
        return [self.hub] + [m.namespace for m in self.machines]


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise HalocutError(f"--name {name!r}: use 1-16 lower-case letters, digits and '-'")
    return name


def plan_testbed(topology: Topology, name: str) -> Layout:
    """The layout of a testbed for ``topology``; an error when it has more than 250 machines or segments."""
    check_name(name)
    if len(topology.devices) > 250 or len(topology.links) > 250:
        raise HalocutError(f"topology '{topology.name}': a testbed holds at most 250 machines and 250 links")
    tag = hashlib.sha1(name.encode()).hexdigest()[:4]
    machines = tuple(Machine(i, d.name, f"{PREFIX}-{name}-{_safe(d.name)}", f"10.99.0.{i + 1}")
                     for i, d in enumerate(topology.devices))
    if len({m.namespace for m in machines}) < len(machines):
        raise HalocutError(f"topology '{topology.name}': two machine names map to the same namespace name")
    index = {m.name: m for m in machines}
    groups: dict[str, list] = {}
    for link in topology.links:
        groups.setdefault(link.medium or link.key, []).append(link)
    segments, member_of = [], {}
    for s, (segment_name, links) in enumerate(groups.items()):
        on = list(dict.fromkeys(end for link in links for end in (link.a, link.b)))
        members = tuple(Member(m, f"hc{tag}s{s}", f"hc{tag}s{s}m{k}", f"10.{100 + s // 250}.{s % 250}.{k + 1}")
                        for k, m in enumerate(on))
        for member in members:
            member_of[(member.machine, s)] = member
        medium = links[0].medium
        segments.append((s, segment_name, members, topology.medium(medium).bandwidth_bps if medium else None, links))
    routes, classes = [], {s: [] for s, *_ in segments}
    segment_of = {link.key: s for s, _, _, _, links in segments for link in links}
    for source in machines:
        by_link: dict[str, list[str]] = {}
        for target in machines:
            if target.name == source.name:
                continue
            first = topology.route(source.name, target.name)[0]
            peer = first.b if first.a == source.name else first.a
            s = segment_of[first.key]
            member = member_of[(source.name, s)]
            routes.append(Route(source.name, target.address, member_of[(peer, s)].address, member.interface))
            by_link.setdefault(first.key, []).append(target.address)
        for link in topology.links:
            if source.name in (link.a, link.b) and link.key in by_link:
                peer = link.b if link.a == source.name else link.a
                classes[segment_of[link.key]].append(
                    (source.name, Shaped(link.key, peer, link.bandwidth_bps, tuple(by_link[link.key]))))
    built = tuple(Segment(s, n, f"hc{tag}b{s}", bps, f"hc{tag}i{s}" if bps else None, members, tuple(classes[s]))
                  for s, n, members, bps, _ in segments)
    return Layout(name, tag, f"{PREFIX}-{name}-hub", machines, built, tuple(routes))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:40]
