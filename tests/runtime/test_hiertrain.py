"""HierTrain's hybrid-parallel training step on Ray actors equals single-process SGD (rtol 1e-5, atol 4e-5,
torch.distributed.pipelining's own tolerances) for LeNet-5 and a small VGG-like net with batch norm in eval
mode, over schedules with m_s = 0, m_s = m_l, b_s = 0 and every task on every kind of machine; a worker
killed mid-iteration is restarted, the iteration redone, and the result still equals it; the bytes each
link carries are the ones the planner priced."""

import numpy as np
import pytest

from halocut.compiler.commands import training_model
from halocut.ir.train_plan import FORMAT, TrainPlan
from halocut.runtime.hiertrain import ATOL, RTOL, TrainCluster, TrainOptions, single_process_sgd, train
from halocut.runtime.hiertrain_worker import SyntheticData, TrainWorker, group_modules
from halocut.targets.topology import load_topology
from halocut.targets.training import Schedule, link_bytes, messages, training_costs

from tests.support import ROOT

TOPOLOGY = load_topology(ROOT / "examples/topologies/hiertrain-1core.yaml")
WORKERS = {"device": "device", "edge": "edge", "cloud": "cloud"}
VGG = "examples/models/hiertrain.py:vgg_small"

# (model, mapping o/s/l, m_s, m_l, b_o, b_s, b_l); batch 12 (LeNet-5 has 5 groups, vgg_small 5)
SCHEDULES = [
    ("lenet5", ("cloud", "device", "edge"), 1, 3, 5, 4, 3),  # three tasks, all different layers
    ("lenet5", ("edge", "cloud", "device"), 0, 2, 7, 0, 5),  # m_s = 0: worker_s idle
    ("lenet5", ("device", "edge", "cloud"), 2, 2, 4, 4, 4),  # m_s = m_l
    ("lenet5", ("cloud", "edge", "device"), 2, 5, 6, 0, 6),  # b_s = 0 with m_s > 0; worker_l runs every layer
    (VGG, ("cloud", "device", "edge"), 1, 4, 3, 5, 4),       # batch norm (eval mode) in every conv group
    (VGG, ("edge", "device", "cloud"), 3, 3, 0, 6, 6),       # b_o = 0: worker_o trains only others' rows
]


@pytest.fixture(scope="module")
def cluster():
    """One embedded Ray session and one worker actor per machine for the module; each run reuses them."""
    with TrainCluster(list(WORKERS.values()), threads=1) as workers:
        yield workers


def schedule_plan(model, mapping, m_s, m_l, b, trained):
    return TrainPlan.from_json({
        "format": FORMAT, "model": trained.name, "input_shape": list(trained.input_shape), "batch": sum(b),
        "policy": "manual", "workers": WORKERS, "groups": [g.name for g in trained.groups],
        "mapping": dict(zip("osl", mapping)), "m_s": m_s, "m_l": m_l, "b_o": b[0], "b_s": b[1], "b_l": b[2],
        "chain": None, "t_total_s": 0.0})


@pytest.mark.parametrize("model, mapping, m_s, m_l, b_o, b_s, b_l", SCHEDULES,
                         ids=[f"{s[0].split(':')[-1]}-{s[1][0]}-{s[2]}-{s[3]}-{s[4]}.{s[5]}.{s[6]}" for s in SCHEDULES])
def test_hybrid_parallel_step_equals_single_process_sgd(cluster, model, mapping, m_s, m_l, b_o, b_s, b_l):
    trained = training_model(model)
    plan = schedule_plan(model, mapping, m_s, m_l, (b_o, b_s, b_l), trained)
    result = train(TrainOptions(plan, TOPOLOGY, group_modules(trained.graph, trained.groups), steps=3, lr=0.05),
                   cluster)
    assert result.equivalent and result.max_param_error < 1e-5, result.max_param_error
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    # the parameters moved: equality with SGD is not equality with the initialisation
    initial = [p.detach().numpy() for g in group_modules(trained.graph, trained.groups) for p in g.parameters()]
    data = SyntheticData(0, plan.batch, trained.input_shape[1:], 10)
    moved = single_process_sgd(group_modules(trained.graph, trained.groups), data, 3, 0.05)
    assert max(float(np.abs(a - b).max()) for a, b in zip(initial, moved)) > 100 * ATOL
    # what crossed each link is what the planner priced, plus the labels (8 bytes a sample) to worker_o
    costs = training_costs(TOPOLOGY, trained.graph, trained.groups, trained.name, plan.batch, trained.sample_bytes)
    priced = link_bytes(TOPOLOGY, costs, messages(costs, Schedule(mapping, m_s, m_l, (b_o, b_s, b_l))))
    if mapping[0] != "device":
        for link in TOPOLOGY.route("device", mapping[0]):
            priced[link.key] = priced.get(link.key, 0.0) + 8 * plan.batch
    assert {k: v for k, v in result.bytes_per_link.items() if v} == {k: v for k, v in priced.items() if v}


@pytest.mark.parametrize("victim", ["edge", "cloud"])
def test_a_worker_killed_mid_iteration_is_redone_and_still_equals_sgd(cluster, victim):
    trained = training_model("lenet5")
    plan = schedule_plan("lenet5", ("cloud", "device", "edge"), 1, 3, (5, 4, 3), trained)
    result = train(TrainOptions(plan, TOPOLOGY, group_modules(trained.graph, trained.groups), steps=3, lr=0.05,
                                kill=(victim, 2)), cluster)
    assert result.equivalent and result.max_param_error < 1e-5
    assert len(result.recoveries) == 1
    recovery = result.recoveries[0]
    assert recovery["restarted"] == [victim] and recovery["restored_iteration"] == 1
    assert len(result.seconds) == len(result.losses) == 3


def test_the_protocol_without_ray_gives_the_same_parameters_as_sgd():
    """The worker class alone, its calls in the driver's order, in one process (no Ray, no checkpoints)."""
    trained = training_model("lenet5")
    groups = group_modules(trained.graph, trained.groups)
    data = SyntheticData(3, 10, trained.input_shape[1:], 10)
    rows = {"o": (0, 4), "s": (4, 7), "l": (7, 10)}
    workers = {"o": TrainWorker("cloud"), "s": TrainWorker("device"), "l": TrainWorker("edge")}
    for task, count in (("o", 5), ("s", 2), ("l", 4)):
        workers[task].configure(task, groups[:count], 0.1, 2, 4, data, rows)
    o, s, l = workers["o"], workers["s"], workers["l"]
    for iteration in (1, 2):
        out_s, out_l = s.front(iteration, None, "cloud"), l.front(iteration, None, "cloud")
        o.front(iteration, None)
        o.middle(out_s)
        to_l, _ = o.rest(out_l, None, "edge")
        to_s = o.back_middle("device")
        o.back_front()
        combined_s, combined_l = o.reduce(s.back(to_s, "cloud"), l.back(to_l, "cloud"), "device", "edge")
        s.update(combined_s)
        l.update(combined_l)
    reference = single_process_sgd(groups, data, 2, 0.1)
    for worker in workers.values():
        for mine, theirs in zip(worker.state(), reference):
            np.testing.assert_allclose(mine, theirs, rtol=RTOL, atol=ATOL)
    assert o.take_statistics()["sent_bytes"] == {"edge": 2 * 3 * 336 + 2 * sum(
        p.nbytes for p in l.state()), "device": 2 * 3 * 1600 + 2 * sum(p.nbytes for p in s.state())}
