"""HierTrain's planner (paper 002, Algorithm 1 and Sec. V) and its baselines: the LP relaxation, the rounding,
the exact integer search, pruning, and the shortest paths, on hand-checked cases, seeded random cases and
LeNet-5 / AlexNet on the paper's topology."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from halocut.compiler.commands import training_model
from halocut.planning.training import POLICIES, get_policy
from halocut.planning.training.baselines import best_cut, shortest_chain
from halocut.planning.training.hiertrain import (integer_points, layer_pairs, lower_bound, mappings,
                                                 plan_hiertrain, plan_hiertrain_exact, round_samples,
                                                 rounding_gap, solve_relaxation)
from halocut.targets.topology import load_topology
from halocut.targets.training import HierTrainModel, Schedule, chain_time, t_total, training_costs

from tests.support import ROOT
from tests.support.training import random_costs

SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_relaxation_below_integer_optimum_below_rounded_schedule(seed):
    costs = random_costs(seed)
    for mapping in mappings(costs)[:3]:
        for m_s, m_l in layer_pairs(costs.layers):
            model = HierTrainModel(costs, mapping, m_s, m_l)
            relaxed, lp_value = solve_relaxation(model, costs.batch)
            assert abs(relaxed.sum() - costs.batch) < 1e-6 and (m_s or relaxed[1] < 1e-9) and (m_l or relaxed[2] < 1e-9)
            assert lp_value == pytest.approx(model.evaluate(relaxed), rel=1e-6, abs=1e-9)  # the epigraph is tight
            optimum = float(np.min(model.evaluate(integer_points(costs.batch, m_s, m_l))))
            rounded = model.evaluate(round_samples(relaxed, costs.batch))
            assert lp_value <= optimum + 1e-9 <= rounded + 2e-9
            assert lower_bound(model, costs.batch) <= lp_value + 1e-9


@pytest.mark.parametrize("seed", SEEDS)
def test_pruning_returns_algorithm_1s_schedule(seed):
    costs = random_costs(seed)
    pruned, full = plan_hiertrain(costs), plan_hiertrain(costs, prune=False)
    assert pruned.schedule == full.schedule and pruned.t_total_s == full.t_total_s
    assert full.solved == 6 * (costs.layers + 1) * (costs.layers + 2) // 2 >= pruned.solved  # 3(N^2 + 3N + 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_exact_search_is_the_integer_optimum_and_bounds_the_rounding(seed):
    costs = random_costs(seed, batch=int(np.random.default_rng(seed).integers(1, 9)))
    exact, rounded = plan_hiertrain_exact(costs), plan_hiertrain(costs)
    assert exact.t_total_s <= rounded.t_total_s + 1e-12
    assert exact.t_total_s == pytest.approx(t_total(costs, exact.schedule))
    brute = min(t_total(costs, Schedule(mapping, m_s, m_l, b)) for mapping in mappings(costs)
                for m_s, m_l in layer_pairs(costs.layers)
                for b in itertools.product(range(costs.batch + 1), repeat=3)
                if sum(b) == costs.batch and (m_s or not b[1]) and (m_l or not b[2]))
    assert exact.t_total_s == pytest.approx(brute, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=3, max_size=3), st.integers(1, 500))
def test_rounding_keeps_the_batch_and_moves_each_share_by_less_than_one(weights, batch):
    total = sum(weights) or 1.0
    relaxed = [batch * w / total for w in weights] if sum(weights) else [batch, 0.0, 0.0]
    rounded = round_samples(relaxed, batch)
    assert sum(rounded) == batch and all(abs(r - x) < 1 + 1e-9 for r, x in zip(rounded, relaxed))
    fractions = [x - np.floor(x + 1e-9) for x in relaxed]
    up = [r > np.floor(x + 1e-9) for r, x in zip(rounded, relaxed)]
    # Sec. V: only the largest fraction parts go up
    assert all(fractions[i] >= fractions[j] - 1e-9 for i in range(3) for j in range(3) if up[i] and not up[j])


def test_eq_12_by_hand():
    """Two groups, no latency: every phase of eqs. 5-11 written out for one schedule."""
    costs = random_costs(3, layers=2, batch=10, latency=False)
    o, s, l = "gpu", "pi", "nuc"
    b_o, b_s, b_l = 5, 3, 2
    to, ts, tl = (costs.tables[w] for w in (o, s, l))
    q, (mo1, mo2) = costs.sample_bytes, [g.output_bytes for g in costs.groups]
    rate = {k: r.seconds_per_byte for k, r in costs.routes.items()}
    f1 = max(q * b_o * rate[("pi", o)] + b_o * to.forward_s[0], b_s * ts.forward_s[0] + b_s * mo1 * rate[(s, o)],
             q * b_l * rate[("pi", l)] + b_l * tl.forward_s[0])
    k1 = max(b_o * to.backward_s[0], b_s * ts.backward_s[0] + b_s * mo1 * rate[(o, s)], b_l * tl.backward_s[0])
    f2 = max((b_o + b_s) * to.forward_s[1], b_l * tl.forward_s[1] + b_l * mo2 * rate[(l, o)])
    k2 = max((b_o + b_s) * to.backward_s[1], b_l * tl.backward_s[1] + b_l * mo2 * rate[(o, l)])
    mp = [g.param_bytes for g in costs.groups]
    update = max(sum(to.update_s), ts.update_s[0], sum(tl.update_s)) + \
        max(mp[0] * (rate[(s, o)] + rate[(o, s)]), sum(mp) * (rate[(l, o)] + rate[(o, l)]))
    assert t_total(costs, Schedule((o, s, l), 1, 2, (b_o, b_s, b_l))) == pytest.approx(f1 + k1 + f2 + k2 + update)


def test_baselines_are_the_papers():
    costs = random_costs(5, layers=4, batch=8)
    device, edge, cloud = costs.workers["device"], costs.workers["edge"], costs.workers["cloud"]
    alone = get_policy("all-edge")(costs)
    table = costs.tables[edge]
    expected = costs.route(device, edge).seconds(costs.batch * costs.sample_bytes) + \
        costs.batch * sum(table.forward_s + table.backward_s) + sum(table.update_s)
    assert alone.t_total_s == pytest.approx(expected)
    assert alone.t_total_s == pytest.approx(chain_time(costs, [edge] * 4))  # one worker: both models agree
    chains = [list(c) for c in itertools.product(costs.workers.values(), repeat=4)]
    assert shortest_chain(costs, list(costs.workers.values()))[0] == pytest.approx(min(chain_time(costs, c)
                                                                                      for c in chains))
    one_cut = [c for c in chains if set(c) <= {device, cloud} and c == sorted(c, key=[device, cloud].index)]
    assert best_cut(costs, device, cloud)[0] == pytest.approx(min(chain_time(costs, c) for c in one_cut))
    compressed = random_costs(5, layers=4, batch=8, compress_bits=8)
    assert get_policy("jalad")(compressed).t_total_s <= get_policy("jalad")(costs).t_total_s
    values = {p: get_policy(p)(costs).t_total_s for p in POLICIES}
    assert values["hiertrain-exact"] <= min(values["hiertrain"], values["all-edge"], values["all-cloud"]) + 1e-12
    assert values["jointdnn+"] <= values["jointdnn"] + 1e-12


@pytest.mark.parametrize("model, shape, batch", [("lenet5", None, 64), ("alexnet", (1, 3, 64, 64), 32)])
def test_paper_models_on_the_paper_topology(model, shape, batch):
    trained = training_model(model, shape)
    topology = load_topology(ROOT / "examples/topologies/hiertrain-1core.yaml")
    costs = training_costs(topology, trained.graph, trained.groups, trained.name, batch, trained.sample_bytes)
    choice = plan_hiertrain(costs)
    others = [get_policy(p)(costs).t_total_s for p in ("all-edge", "all-cloud")]
    assert choice.t_total_s <= min(others) + 1e-12
    if model == "lenet5":
        gap = rounding_gap(costs)
        assert 0.0 <= gap["gap"] <= gap["worst_pair_gap"] + 1e-12 and gap["exact_t_total_s"] > 0
