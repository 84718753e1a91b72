"""HierTrain's planner (paper 002, Algorithm 1 and Sec. V).

For each of the 6 mappings of (worker_o, worker_s, worker_l) onto (device, edge, cloud) and each
``0 <= m_s <= m_l <= N``, problem P1 (eqs. 16-19) with the layers fixed is an integer program in
``(b_o, b_s, b_l)``; its objective, eq. (12), is a sum of maxima of linear functions
(:class:`~halocut.targets.training.HierTrainModel`). The relaxation is an LP in epigraph form,

    minimise  t_1 + t_2 + t_3 + t_4 + a_3 . b
    s.t.      c_pk + a_pk . b <= t_p   (every branch k of phase p: eqs. 5-8)
              b_o + b_s + b_l = B,  0 <= b_s <= m_s B,  0 <= b_l <= m_l B,  b_o >= 0   (eqs. 17-19)

solved with HiGHS (``scipy.optimize.linprog(method="highs")``), rounded as Sec. V says, and eq. (12) is
evaluated again on the rounded integers; the best of all candidates is the schedule.
:func:`plan_hiertrain_exact` replaces the LP and rounding by an exhaustive search over every integer
``(b_o, b_s, b_l)``, which measures what the rounding loses (small cases: ``(B+1)(B+2)/2`` points per pair).

>>> round_samples([2.6, 3.3, 4.1], 10)  # fractions .6, .3, .1: B - (2 + 3 + 4) = 1, the largest goes up
(3, 3, 4)
>>> round_samples([2.5, 2.5, 5.0], 10)
(3, 2, 5)
"""

from __future__ import annotations

from itertools import permutations

import numpy as np
from scipy.optimize import linprog

from halocut.ir.errors import HalocutError
from halocut.planning.training.choice import TrainChoice
from halocut.targets.training import TRAINING_ROLES, HierTrainModel, Schedule, TrainingCosts

EXACT_MAX_POINTS = 200_000  # integer points per (mapping, m_s, m_l) the exact search accepts


def mappings(costs: TrainingCosts) -> list[tuple[str, str, str]]:
    """The 6 mappings of (worker_o, worker_s, worker_l) onto the device, edge and cloud, in a fixed order."""
    return list(permutations([costs.workers[role] for role in TRAINING_ROLES]))


def layer_pairs(layers: int) -> list[tuple[int, int]]:
    """Every ``(m_s, m_l)`` with ``0 <= m_s <= m_l <= N``: ``(N + 1)(N + 2) / 2`` of them."""
    return [(m_s, m_l) for m_s in range(layers + 1) for m_l in range(m_s, layers + 1)]


def plan_hiertrain(costs: TrainingCosts, prune: bool = True) -> TrainChoice:
    """Algorithm 1: the best rounded LP solution over every mapping and ``(m_s, m_l)``.

    ``prune`` skips the LP of a pair whose lower bound (:func:`lower_bound`) already reaches the best
    T_total found: its rounded value cannot be lower, so the schedule is the one Algorithm 1 returns when it
    solves every LP (``prune=False``), in less time. The single-task pairs (``m_s = m_l = 0``: ``b = (B, 0,
    0)`` is the only point) go first, so the bound has something to meet early.
    """
    best, solved = None, 0
    pairs = [(0, 0)] + [p for p in layer_pairs(costs.layers) if p != (0, 0)]
    for m_s, m_l in pairs:
        for mapping in mappings(costs):
            model = HierTrainModel(costs, mapping, m_s, m_l)
            if prune and best is not None and lower_bound(model, costs.batch) >= best[0] - 1e-12:
                continue
            relaxed, lp_value = solve_relaxation(model, costs.batch)
            solved += 1
            b = round_samples(relaxed, costs.batch)
            value = model.evaluate(b)
            if best is None or value < best[0] - 1e-12 or (value <= best[0] + 1e-12 and
                                                           _order(mapping, m_s, m_l, costs) < best[4]):
                best = (value, Schedule(mapping, m_s, m_l, b), tuple(float(x) for x in relaxed), lp_value,
                        _order(mapping, m_s, m_l, costs))
    value, schedule, relaxed, lp_value, _ = best
    return TrainChoice("hiertrain", value, schedule, lp_b=relaxed, lp_t_total_s=lp_value, solved=solved)


def _order(mapping: tuple[str, str, str], m_s: int, m_l: int, costs: TrainingCosts) -> tuple:
    """Ties go to the first candidate of Algorithm 1's loop order (mapping, then m_s, then m_l)."""
    return mappings(costs).index(mapping), m_s, m_l


def lower_bound(model: HierTrainModel, batch: int) -> float:
    """A bound under T_total at every feasible ``b``: every coefficient of eq. (12) is >= 0, so each phase
    costs at least its largest constant, and the linear part at least ``B`` times its smallest allowed
    coefficient."""
    allowed = [model.linear[0]] + [model.linear[j] for j, m in ((1, model.m_s), (2, model.m_l)) if m]
    return model.constant + batch * min(allowed) + sum(max(c for c, _ in branches) for branches in model.phases)


def solve_relaxation(model: HierTrainModel, batch: int) -> tuple[np.ndarray, float]:
    """The LP relaxation of P1 for the model's mapping and ``(m_s, m_l)``: (b_o, b_s, b_l) and T_total there."""
    phases = len(model.phases)
    cost = np.concatenate([model.linear, np.ones(phases)])
    rows, bounds_ub = [], []
    for p, branches in enumerate(model.phases):
        for constant, coefficients in branches:
            row = np.zeros(3 + phases)
            row[:3], row[3 + p] = coefficients, -1.0
            rows.append(row)
            bounds_ub.append(-constant)
    bounds = [(0, batch), (0, batch if model.m_s else 0), (0, batch if model.m_l else 0)] + [(0, None)] * phases
    result = linprog(cost, A_ub=np.array(rows), b_ub=np.array(bounds_ub), A_eq=[[1, 1, 1] + [0] * phases],
                     b_eq=[batch], bounds=bounds, method="highs")
    if result.status != 0:
        raise HalocutError(f"HiGHS could not solve the relaxation (m_s={model.m_s}, m_l={model.m_l}, mapping "
                           f"{model.mapping}): {result.message}")
    return np.clip(result.x[:3], 0, batch), float(result.fun) + model.constant


def round_samples(relaxed, batch: int) -> tuple[int, int, int]:
    """Sec. V's rounding: integer parts, then +1 for the largest fraction part, and if the sum is still short
    of B for the two largest. The shortfall ``B - sum(int(b_j))`` is the number of fractions that sum to an
    integer, 0, 1 or 2, so this is "+1 for the k largest fractions" with k that shortfall (k = 0: the LP's
    solution was already integral; values within 1e-9 of an integer count as that integer)."""
    values = np.asarray(relaxed, dtype=float)
    nearest = np.round(values)
    values = np.where(np.abs(values - nearest) < 1e-9, nearest, values)
    integers = np.floor(values).astype(int)
    fractions = values - integers
    short = batch - int(integers.sum())
    if not 0 <= short <= 2:
        raise HalocutError(f"rounding {list(relaxed)}: they do not sum to the batch {batch}")
    for j in np.argsort(-fractions, kind="stable")[:short]:
        integers[j] += 1
    return tuple(int(x) for x in integers)


def integer_points(batch: int, m_s: int, m_l: int) -> np.ndarray:
    """Every integer (b_o, b_s, b_l) that satisfies eqs. 17-19, as rows."""
    b_s = np.arange(batch + 1) if m_s else np.zeros(1, dtype=int)
    b_l = np.arange(batch + 1) if m_l else np.zeros(1, dtype=int)
    s, l = np.meshgrid(b_s, b_l, indexing="ij")
    s, l = s.ravel(), l.ravel()
    keep = s + l <= batch
    return np.stack([batch - s[keep] - l[keep], s[keep], l[keep]], axis=1)


def plan_hiertrain_exact(costs: TrainingCosts) -> TrainChoice:
    """The optimum of P1 over integers: every mapping, ``(m_s, m_l)`` and integer ``(b_o, b_s, b_l)``."""
    points_per_pair = (costs.batch + 1) * (costs.batch + 2) // 2
    if points_per_pair > EXACT_MAX_POINTS:
        raise HalocutError(f"batch {costs.batch}: the exact search evaluates {points_per_pair} points per "
                           f"(mapping, m_s, m_l), more than {EXACT_MAX_POINTS}; use --policy hiertrain")
    best, evaluated = None, 0
    for mapping in mappings(costs):
        for m_s, m_l in layer_pairs(costs.layers):
            model = HierTrainModel(costs, mapping, m_s, m_l)
            points = integer_points(costs.batch, m_s, m_l)
            values = model.evaluate(points)
            evaluated += len(points)
            i = int(np.argmin(values))
            if best is None or values[i] < best[0] - 1e-12:
                best = (float(values[i]), Schedule(mapping, m_s, m_l, tuple(int(x) for x in points[i])))
    return TrainChoice("hiertrain-exact", best[0], best[1], solved=evaluated)


def rounding_gap(costs: TrainingCosts) -> dict:
    """What Sec. V's rounding loses here: T_total of the rounded LP schedule against the integer optimum, both
    overall and for the worst single (mapping, m_s, m_l)."""
    rounded, exact = plan_hiertrain(costs), plan_hiertrain_exact(costs)
    worst = 0.0
    for mapping in mappings(costs):
        for m_s, m_l in layer_pairs(costs.layers):
            model = HierTrainModel(costs, mapping, m_s, m_l)
            relaxed, _ = solve_relaxation(model, costs.batch)
            optimum = float(np.min(model.evaluate(integer_points(costs.batch, m_s, m_l))))
            worst = max(worst, model.evaluate(round_samples(relaxed, costs.batch)) / optimum - 1.0)
    return {"rounded_t_total_s": rounded.t_total_s, "exact_t_total_s": exact.t_total_s,
            "gap": rounded.t_total_s / exact.t_total_s - 1.0, "worst_pair_gap": worst,
            "rounded": rounded, "exact": exact}
