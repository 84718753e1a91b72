"""DistrEdge: LC-PSS partitions as Algorithm 1 says, OSDS splits with DDPG, and every plan reproduces the model."""

import random

import numpy as np
import pytest
import torch

from halocut.compiler.prepare import prepare_model
from halocut.ir.errors import HalocutError
from halocut.ir.graph import compute_nodes
from halocut.planning.planners import distredge as de
from halocut.planning.search.distredge_env import SplitProblem
from halocut.runtime.reference import verify_plan
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology

from tests.support import ROOT


def topology(name):
    return load_topology(ROOT / f"examples/topologies/{name}.yaml")


def problem(prepared, model, topo, alpha=de.ALPHA):
    providers = [d.name for d in topo.compute_devices() if d.name != topo.requester.name]
    volumes = de.partition(de.layout(prepared.graph), len(providers), alpha, 0)
    return SplitProblem(prepared.graph, model, prepared.input_shape, volumes, topo, CostModel(), providers)


@pytest.fixture(scope="module")
def alexnet():
    return prepare_model("alexnet", (1, 3, 96, 96))


@pytest.mark.parametrize("model,shape,topo", [("alexnet", (1, 3, 96, 96), "distredge-dc"),
                                              ("alexnet", (1, 3, 96, 96), "default"),
                                              ("resnet18", (1, 3, 32, 32), "distredge-db")])
def test_plans_reproduce_the_model(model, shape, topo):
    prepared = prepare_model(model, shape)
    plan = de.plan_distredge(prepared.graph, model, prepared.input_shape, topology(topo), CostModel(), episodes=40)
    assert plan.planner == "distredge"
    verify_plan(prepared.graph, plan, original=prepared.module)


def test_lc_pss_adds_the_best_point_of_every_volume_each_loop():
    calls = []

    def score(a, b):
        calls.append((a, b))
        return 3 + (b - a) ** 2

    # loop 1: [0, 8) -> 4 (19 + 19 < 67); loop 2: both halves split in two (7 + 7 < 19); loop 3: 4 + 4 > 7, stop
    assert de.lc_pss(8, score) == [0, 2, 4, 6, 8]
    assert (0, 8) in calls and (0, 4) in calls and (2, 4) in calls
    assert de.lc_pss(5, lambda a, b: 1.0) == [0, 5]  # a cut must be strictly better


def test_partition_score_trades_operations_for_transmission():
    prepared = prepare_model("vgg11", (1, 3, 64, 64))
    blocks = de.layout(prepared.graph)
    assert [(b.spatial, len(b.segments)) for b in blocks] == [(True, 13), (False, 1)]
    run = blocks[0].segments
    # one provider: no halo computed twice, and each volume finds its input where the volume before left it
    whole = de.PartitionScore([run], 1, 0.5, samples=3)
    flops = 3 * sum(n.meta["layer"].flops for segment in run for n in segment)
    sent, computed = whole.tables[0]
    for points in ([0, 13], [0, 4, 13], [0, 1, 2, 9, 13]):
        assert sum(computed[a][b] for a, b in zip(points, points[1:])) == pytest.approx(flops)
        assert sum(sent[a][b] for a, b in zip(points, points[1:])) == pytest.approx(3 * 3 * 64 * 64 * 4)
    two = de.PartitionScore([run], 2, 0.5, samples=3)
    assert two.tables[0][1][0][13] > two.tables[0][1][0][4] + two.tables[0][1][4][13] > flops  # halos: O falls
    assert two.tables[0][0][0][13] < two.tables[0][0][0][4] + two.tables[0][0][4][13]  # a cut: T rises
    volumes = {alpha: sum(v.spatial for v in de.partition(blocks, 4, alpha, 0)) for alpha in (0.0, 1.0)}
    assert volumes[1.0] == 1 and volumes[0.0] >= 8  # paper V-C: alpha = 1 few volumes, alpha = 0 layer by layer


def test_action_maps_to_rows_by_eq_9(alexnet):
    topo = topology("distredge-da")
    split = problem(alexnet, "alexnet", topo)
    providers = [d.name for d in topo.compute_devices() if d.name != "requester"]
    assert split.height(0) == 11
    # sorted (-1, -0.5, 0.1) -> cuts at rows 0, round(2.75) = 3, round(6.05) = 6: the first provider gets none
    assert split.parts(0, np.array([0.1, -1.0, -0.5])) == ((providers[1], 0, 3), (providers[2], 3, 6),
                                                         (providers[3], 6, 11))


def test_latency_estimate_equals_the_simulator_without_contention(alexnet):
    topo = topology("distredge-db")
    split = problem(alexnet, "alexnet", topo)
    splits = tuple((("nano-1", 0, split.height(s)),) for s in range(len(split.spatial)))
    estimate, progress = split.estimate_s(splits)
    assert estimate == pytest.approx(split.latency_s(splits), rel=1e-9)
    assert set(progress.singles.values()) == {"nano-1"}  # the classifier goes where the last volume is (V-A)


def test_seeded_and_leaves_global_state_alone(alexnet):
    topo = topology("distredge-db")
    threads = torch.get_num_threads()
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    first = de.plan_distredge(alexnet.graph, "alexnet", alexnet.input_shape, topo, CostModel(), episodes=50)
    drawn = torch.rand(1).item(), np.random.rand(), random.random()
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    assert drawn == (torch.rand(1).item(), np.random.rand(), random.random())
    assert torch.get_num_threads() == threads
    assert de.plan_distredge(alexnet.graph, "alexnet", alexnet.input_shape, topo, CostModel(), episodes=50) == first


def test_never_worse_than_the_proportional_or_one_provider_split(alexnet):
    topo = topology("distredge-da")
    plan = de.plan_distredge(alexnet.graph, "alexnet", alexnet.input_shape, topo, CostModel(), episodes=60)
    latency = simulate(alexnet.graph, plan, topo, requests=1).latency_s
    split = problem(alexnet, "alexnet", topo)
    assert latency <= split.latency_s(de.proportional_splits(split)) + 1e-12
    for provider in split.providers:
        assert latency <= split.latency_s(tuple(((provider, 0, split.height(s)),)
                                                for s in range(len(split.spatial)))) + 1e-12


def test_osds_learns_better_splits_than_it_starts_with(alexnet):
    topo = topology("distredge-db")
    split = problem(alexnet, "alexnet", topo)
    reference = split.latency_s(de.proportional_splits(split))
    with de._training_context():
        de.osds(split, reference, 300, 0)
    history = np.array(split.history[1:])  # every episode's simulated latency; the first 64 steps are random
    assert len(history) == 301  # 300 episodes and the trained actor's own
    assert history[-30:].mean() < 0.85 * history[:30].mean()
    assert split.best[0] == history.min()


def test_the_slowest_provider_gets_nothing_on_group_dc():
    prepared = prepare_model("vgg16")
    topo = topology("distredge-dc")
    plan = de.plan_distredge(prepared.graph, "vgg16", prepared.input_shape, topo, CostModel(), episodes=100)
    assert "pi3-0" not in plan.devices()  # paper VI (2): "the Pi3 in Group-DC ... is not allocated any computation"
    assert [s.kind for s in plan.stages] == ["spatial", "spatial", "single"]  # LC-PSS: cut before conv5_1
    assert plan.stages[1].nodes[0] == "features_24"


def test_episode_budget(monkeypatch):
    monkeypatch.setenv(de.EPISODES_VARIABLE, "12")
    assert de.episode_budget(None) == 12 and de.episode_budget(3) == 3
    monkeypatch.delenv(de.EPISODES_VARIABLE)
    assert de.episode_budget(None) == de.DEFAULT_EPISODES
    monkeypatch.setenv(de.EPISODES_VARIABLE, "many")
    with pytest.raises(HalocutError, match="HALOCUT_DISTREDGE_EPISODES='many'"):
        de.episode_budget(None)
    with pytest.raises(HalocutError, match="0 or more"):
        de.episode_budget(-1)


def test_layout_cuts_only_where_one_value_crosses():
    graph = prepare_model("resnet18", (1, 3, 32, 32)).graph
    blocks = de.layout(graph)
    ends = [segment[-1].name for segment in blocks[0].segments]
    assert "layer1_0_relu_1" in ends and "layer1_0_conv2" not in ends  # block outputs, never inside a block
    names = [n.name for n in compute_nodes(graph)]
    assert names.index("layer1_0_relu_1") + 1 in de.clean_positions(graph)
    assert names.index("layer1_0_conv2") + 1 not in de.clean_positions(graph)
