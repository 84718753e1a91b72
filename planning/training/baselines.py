"""The baselines of paper 002 (Sec. VI-C), under the same training costs as HierTrain.

All-Edge and All-Cloud are HierTrain schedules with one task (worker_o on the edge or the cloud, ``m_s = m_l
= 0``, every sample). JointDNN, JointDNN+ and JALAD are model parallelism: every sample goes through the
layer groups one worker after another (:func:`~halocut.targets.training.chain_time`). JointDNN chooses one
cut between the device and the cloud; JointDNN+ (the paper's extension to three levels) a shortest path
through the graph whose nodes are (group, worker), as JointDNN's own formulation is a shortest path; JALAD one
cut between the edge and the cloud, the device's samples sent to the edge first, with what is sent forward
over the edge-cloud link compressed (``compress_bits``, 8 by default; JALAD's accuracy cost is not modelled).

>>> from halocut.ir.layer_groups import LayerGroup
>>> from halocut.targets.training import Route, TrainingTable
>>> groups = (LayerGroup("conv", ("conv",), 0, 0, 1000, 10, (1,)), LayerGroup("fc", ("fc",), 0, 0, 10**6, 4, (1,)))
>>> tables = {"pi": TrainingTable((1e-2, 1e-2), (2e-2, 2e-2), (0.0, 0.5), "given"),
...           "gpu": TrainingTable((1e-4, 1e-4), (2e-4, 2e-4), (0.0, 0.01), "given")}
>>> routes = {(a, b): Route(0.0, 0.0 if a == b else 8 / 1e6) for a in tables for b in tables}
>>> costs = TrainingCosts("m", 4, groups, 10**5, {"device": "pi", "edge": "pi", "cloud": "gpu"}, tables, routes)
>>> value, chain = best_cut(costs, "pi", "gpu")  # the conv on the device: 40 B forward and back, not 400 kB of samples
>>> round(value, 5), chain
(0.13184, ('pi', 'gpu'))
"""

from __future__ import annotations

from halocut.planning.training.choice import TrainChoice
from halocut.targets.training import Schedule, TrainingCosts, chain_edge_s, chain_node_s, chain_time, t_total


def _one_worker(costs: TrainingCosts, role: str, policy: str) -> TrainChoice:
    worker = costs.workers[role]
    others = tuple(w for w in costs.workers.values() if w != worker)
    schedule = Schedule((worker,) + others, 0, 0, (costs.batch, 0, 0))
    return TrainChoice(policy, t_total(costs, schedule), schedule)


def plan_all_edge(costs: TrainingCosts) -> TrainChoice:
    """The device sends every sample to the edge server, which trains the whole model."""
    return _one_worker(costs, "edge", "all-edge")


def plan_all_cloud(costs: TrainingCosts) -> TrainChoice:
    """The device sends every sample to the cloud, which trains the whole model."""
    return _one_worker(costs, "cloud", "all-cloud")


def best_cut(costs: TrainingCosts, first: str, second: str) -> tuple[float, tuple[str, ...]]:
    """One cut: groups 1..k on ``first``, the rest on ``second`` (k = 0..N); the fastest."""
    chains = [tuple([first] * k + [second] * (costs.layers - k)) for k in range(costs.layers + 1)]
    return min((chain_time(costs, list(chain)), chain) for chain in chains)


def plan_jointdnn(costs: TrainingCosts) -> TrainChoice:
    """JointDNN: the device and the cloud, one cut, forward and backward."""
    value, chain = best_cut(costs, costs.workers["device"], costs.workers["cloud"])
    return TrainChoice("jointdnn", value, chain=chain, solved=costs.layers + 1)


def plan_jalad(costs: TrainingCosts) -> TrainChoice:
    """JALAD: the edge and the cloud, one cut; the costs' ``compress_bits`` shrink the edge-cloud link."""
    value, chain = best_cut(costs, costs.workers["edge"], costs.workers["cloud"])
    return TrainChoice("jalad", value, chain=chain, solved=costs.layers + 1)


def shortest_chain(costs: TrainingCosts, workers: list[str]) -> tuple[float, tuple[str, ...]]:
    """The shortest path through the layered graph of (group, worker) nodes: a node costs training that group
    there for the batch, an edge between consecutive groups moving the tensor and its gradient; the path
    starts with the samples leaving the device. Dynamic programming over the groups, exact for this cost."""
    device = costs.workers["device"]
    best = {w: (chain_edge_s(costs, device, w, None) + chain_node_s(costs, w, 0), (w,)) for w in workers}
    for i in range(1, costs.layers):
        best = {w: min((value + chain_edge_s(costs, path[-1], w, i - 1) + chain_node_s(costs, w, i), path + (w,))
                       for value, path in best.values()) for w in workers}
    return min(best.values())


def plan_jointdnn_plus(costs: TrainingCosts) -> TrainChoice:
    """JointDNN+: the shortest path over the layer groups through the device, the edge and the cloud."""
    workers = [costs.workers[r] for r in ("device", "edge", "cloud")]
    value, chain = shortest_chain(costs, workers)
    return TrainChoice("jointdnn+", value, chain=chain, solved=costs.layers * len(workers) ** 2)
