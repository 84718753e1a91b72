"""Pipelined offload, a candidate family of the ``halocut`` planner: a volume sent to one server in row tiles.

When the link is slow and the requester weak (MW's end device and edge
server), splitting among devices is not enough: the server should start on the
first rows while the rest are still on the wire, and the requester may compute
some rows itself meanwhile. For a server ``s``, a leading volume ``[0, j)``, a
number of server tiles ``m`` and the rows ``r0`` the requester keeps, the time
is a two-machine flow shop (the link sends tile inputs in order; the server
computes each tile once its input is in), then the requester's rows are sent,
the layers after the volume run on the server, and the result goes back. Every
(s, j, m, r0) is priced from :class:`VolumeTables`; the few cheapest are
returned as plans for the simulator to judge.
"""

from __future__ import annotations

from halocut.ir.plan import Hop, Plan, Stage, Tile
from halocut.ir.regions import Region
from halocut.planning.search.volume_cost import device_key, height, row_bytes

TILE_COUNTS = (1, 2, 3, 4, 6, 8)
LOCAL_SHARES = (0.0, 0.125, 0.25, 0.375, 0.5)


def pipeline_plans(search, model: str, input_shape: tuple[int, ...], keep: int = 6) -> list[Plan]:
    """The ``keep`` pipelined-offload plans with the lowest estimated latency (none without a server)."""
    requester = search.requester
    servers = sorted((d for d in search.devices if d.name != requester),
                     key=lambda d: search.single(0, len(search.nodes), d))[:2]
    ends = [j for j in search.positions if j > 0 and search.is_volume(0, j)]
    priced = []
    for server in servers:
        for j in ends:
            priced += _price(search, server, j)
    priced.sort(key=lambda item: (item[0], item[1], item[2], tuple(item[3]), item[4]))
    plans, seen = [], set()
    for item in priced:  # different (tile count, share) pairs often give the same tiles: keep distinct plans
        plan = _plan(search, model, input_shape, *item[1:])
        if plan.stages not in seen:
            seen.add(plan.stages)
            plans.append(plan)
        if len(plans) == keep:
            break
    return plans


def _price(search, server, j: int) -> list[tuple]:
    nodes = search.nodes
    volume = nodes[:j]
    needs = search.tables.needs(volume)
    members = {n.name for n in volume}
    outside = [s for s in needs if s not in members]
    total = height(volume[-1])
    in_bytes = sum(needs[s] * row_bytes(search.graph_node(s)) for s in outside)
    out_row = row_bytes(volume[-1])
    server_s = search.tables.compute_s(volume, needs, device_key(server))
    local = next((d for d in search.devices if d.name == search.requester), None)
    local_s = search.tables.compute_s(volume, needs, device_key(local)) if local is not None else None
    fixed, per_byte = search.link(search.requester, server.name)
    back_fixed, back_per_byte = search.link(server.name, search.requester)
    tail = search.single(j, len(nodes), server)
    whole_output = j == len(nodes)
    priced = []
    for share in LOCAL_SHARES if local_s is not None else (0.0,):
        kept = int(round(total * share))
        for count in TILE_COUNTS:
            rows = _equal(total - kept, count)
            if not rows and not kept:
                continue
            sent = computed = returned = 0.0
            for n in rows:
                sent += fixed + in_bytes[n] * per_byte
                computed = max(computed, sent) + server_s[n]
                if whole_output:
                    returned = max(returned, computed) + back_fixed + n * out_row * back_per_byte
            if kept:
                local_done = local_s[kept]
                if whole_output:
                    computed = max(computed, local_done)
                else:
                    sent = max(sent, local_done) + fixed + kept * out_row * per_byte
                    computed = max(computed, sent)
            finish = max(returned, computed) if whole_output else \
                computed + tail + back_fixed + search.output_bytes() * back_per_byte
            priced.append((finish, server.name, j, rows, kept))
    return priced


def _equal(rows: int, count: int) -> list[int]:
    count = min(count, rows)
    return [rows // count + (1 if i < rows % count else 0) for i in range(count)] if count else []


def _plan(search, model: str, input_shape: tuple[int, ...], server: str, j: int, rows: list[int],
          kept: int) -> Plan:
    nodes = search.nodes
    width = tuple(nodes[j - 1].meta["tensor_meta"].shape)[3]
    tiles, top = [], 0
    for count, device in [(n, server) for n in rows] + [(kept, search.requester)]:
        if count:
            tiles.append(Tile(Region((top, top + count), (0, width)), (Hop(device),)))
            top += count
    stages = [Stage("spatial", tuple(n.name for n in nodes[:j]), tiles=tuple(tiles))]
    if j < len(nodes):
        stages.append(Stage("single", tuple(n.name for n in nodes[j:]), device=server))
    return Plan(model, tuple(input_shape), tuple(stages), planner="halocut")

