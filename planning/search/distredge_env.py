"""DistrEdge's OSDS (paper 003, Algorithm 2): DDPG learns the row splits of the layer-volumes.

:class:`SplitProblem` holds the layer-volumes found by LC-PSS and turns split
decisions into a Plan, an incremental latency estimate (the MDP's state) and a
simulated latency (the reward; cached, and the best plan seen is kept as the
paper's ``R_s*``). :class:`SplitEnv` is the MDP as a gymnasium environment:
one step per spatial volume, the action is ``|D| - 1`` split points on the
height of the volume's last layer (eq. 6), sorted and mapped to rows by eq. 9;
the state is the providers' accumulated latencies and the last layer's
(H, C, F, S) (eq. 7); the reward is 0 until the last volume, then ``T_ref / T``
(eq. 8's ``1 / T`` scaled by a constant, the proportional split's latency, so
that rewards are near 1 whatever the model). :func:`osds` trains
stable-baselines3's DDPG on it with the paper's hyper-parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3 import DDPG
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.utils import update_learning_rate
from torch import fx

from halocut.ir.graph import output_nodes
from halocut.ir.layers import value_bytes
from halocut.ir.plan import Hop, Plan, Stage, Tile
from halocut.ir.regions import Region, full_region, overlap_bytes
from halocut.passes.halo import compute_halos
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import Topology

Parts = tuple[tuple[str, int, int], ...]  # (provider, first row, end row) of one volume, empty parts left out

ACTOR_LAYERS = [400, 200, 100]  # paper V: Actor {400, 200, 100}, Critic {400, 200, 100, 100}
CRITIC_LAYERS = [400, 200, 100, 100]
ACTOR_LR, CRITIC_LR, GAMMA, BATCH = 1e-4, 1e-3, 0.99, 64  # paper V: learning rates, gamma, N_b
EPSILON_STEP = 1 / 250  # paper V: delta_eps; noise with probability 1 - (episode / 250)^2, none after 250


@dataclass(frozen=True)
class Volume:
    """Consecutive compute nodes in graph order: a spatial layer-volume or a single-device stage."""

    nodes: tuple[fx.Node, ...]
    spatial: bool


@dataclass(frozen=True)
class Piece:
    """Part of a value held by a device from ``ready_s`` on (region None: the whole tensor)."""

    device: str
    region: Region | None
    ready_s: float
    size_bytes: float


@dataclass
class Progress:
    """The incremental latency model's state after the volumes before ``next``."""

    ready_s: dict[str, float]
    held: dict[str, list[Piece]]
    singles: dict[int, str] = field(default_factory=dict)
    next: int = 0


class SplitProblem:
    """Split decisions -> Plan, estimated and simulated latency; remembers the best plan simulated."""

    def __init__(self, graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], volumes: list[Volume],
                 topology: Topology, cost: CostModel, providers: list[str], planner: str = "distredge"):
        self.graph, self.model, self.input_shape, self.planner = graph, model, tuple(input_shape), planner
        self.volumes, self.topology, self.cost, self.providers = volumes, topology, cost, providers
        self.spatial = [i for i, v in enumerate(volumes) if v.spatial]
        self.sources = [outside_inputs(v.nodes) for v in volumes]
        self._halos: dict[tuple[int, int, int], dict[str, Region]] = {}
        self._compute: dict[tuple[str, int, int, int], float] = {}
        self._routes: dict[tuple[str, str, float], float] = {}
        self.simulated: dict[tuple[Parts, ...], float] = {}
        self.history: list[float] = []  # the latency of every split decision scored, in order
        self.best: tuple[float, tuple[Parts, ...]] = (math.inf, ())

    # --- geometry and costs

    def height(self, step: int) -> int:
        return int(self.volumes[self.spatial[step]].nodes[-1].meta["layer"].output_shape[-2])

    def parts(self, step: int, action: np.ndarray) -> Parts:
        """Eq. 9: sorted action in [-1, 1] -> split points on the last layer's rows; the i-th part to provider i."""
        height = self.height(step)
        cuts = [min(max(math.floor(height * (float(x) + 1.0) / 2.0 + 0.5), 0), height) for x in sorted(action)]
        edges = [0, *cuts, height]
        return tuple((p, a, b) for p, a, b in zip(self.providers, edges, edges[1:]) if b > a)

    def halos(self, index: int, rows: tuple[int, int]) -> dict[str, Region]:
        key = (index, *rows)
        if key not in self._halos:
            volume = list(self.volumes[index].nodes)
            width = volume[-1].meta["layer"].output_shape[-1]
            self._halos[key] = compute_halos(volume, Region(rows, (0, width)))
        return self._halos[key]

    def compute_s(self, device: str, index: int, rows: tuple[int, int] | None) -> float:
        """Seconds ``device`` computes volume ``index`` (rows of its last layer, or all of it), as simulated."""
        key = (device, index, *(rows or (-1, -1)))
        if key not in self._compute:
            regions = self.halos(index, rows) if rows is not None else None
            self._compute[key] = self.cost.nodes_latency(self.topology.device(device),
                                                         list(self.volumes[index].nodes), regions)
        return self._compute[key]

    def transfer_s(self, source: str, target: str, size_bytes: float) -> float:
        """A message alone on its route, stored and forwarded hop by hop (no contention: an estimate).

        DistrEdge's environment prices what its DDPG agent sees this way (paper 003 trains on measured
        latencies); the chosen split is then scored by the simulator like every other plan.
        """
        if source == target or size_bytes <= 0:
            return 0.0
        key = (source, target, size_bytes)
        if key not in self._routes:
            self._routes[key] = sum(link.transfer_s(size_bytes) for link in self.topology.route(source, target))
        return self._routes[key]

    # --- the incremental latency model (the MDP's transitions)

    def start(self) -> Progress:
        requester = self.topology.requester.name
        held = {n.name: [Piece(requester, full_region(n), 0.0, value_bytes(n))] for n in self.graph.graph.nodes
                if n.op == "placeholder"}
        progress = Progress({d: 0.0 for d in self.providers}, held)
        self._singles(progress)
        return progress

    def advance(self, progress: Progress, parts: Parts) -> None:
        """Run the next spatial volume split as ``parts``, then the single stages up to the next one."""
        index = progress.next
        last = self.volumes[index].nodes[-1]
        pieces = []
        for device, a, b in parts:
            needs = self.halos(index, (a, b))
            arrival = max((self._arrival(progress.held[s], device, needs[s]) for s in self.sources[index]
                           if s in needs and not needs[s].is_empty()), default=0.0)
            finish = max(arrival, progress.ready_s[device]) + self.compute_s(device, index, (a, b))
            progress.ready_s[device] = finish
            region = Region((a, b), (0, last.meta["layer"].output_shape[-1]))
            pieces.append(Piece(device, region, finish, value_bytes(last, region)))
        progress.held[last.name] = pieces
        progress.next += 1
        self._singles(progress)

    def _singles(self, progress: Progress) -> None:
        while progress.next < len(self.volumes) and not self.volumes[progress.next].spatial:
            index = progress.next
            device = self._single_device(progress, index)
            arrival = max((self._arrival(progress.held[s], device, None) for s in self.sources[index]), default=0.0)
            finish = max(arrival, progress.ready_s[device]) + self.compute_s(device, index, None)
            progress.ready_s[device] = finish
            for node in self.volumes[index].nodes:
                progress.held[node.name] = [Piece(device, full_region(node), finish, value_bytes(node))]
            progress.singles[index] = device
            progress.next += 1

    def _single_device(self, progress: Progress, index: int) -> str:
        """Paper V-A: the provider holding the most of what the stage reads; else the fastest on it."""
        held = {d: 0.0 for d in self.providers}
        for source in self.sources[index]:
            for piece in progress.held[source]:
                if piece.device in held:
                    held[piece.device] += piece.size_bytes
        if max(held.values()) > 0:
            return max(self.providers, key=lambda d: held[d])
        return min(self.providers, key=lambda d: self.compute_s(d, index, None))

    def _arrival(self, pieces: list[Piece], device: str, region: Region | None) -> float:
        return max((p.ready_s + self.transfer_s(p.device, device, size) for p in pieces
                    if (size := overlap_bytes(p, region)) > 0), default=0.0)

    def estimate_s(self, splits: tuple[Parts, ...]) -> tuple[float, Progress]:
        """The incremental model's end-to-end latency (outputs back at the requester), and its final state."""
        progress = self.start()
        for parts in splits:
            self.advance(progress, parts)
        requester = self.topology.requester.name
        outputs = [n.name for n in output_nodes(self.graph)]
        end = max(self._arrival(progress.held[name], requester, None) for name in outputs)
        return max(end, max((p.ready_s for name in outputs for p in progress.held[name]), default=0.0)), progress

    # --- plans and their simulated latency

    def plan(self, splits: tuple[Parts, ...]) -> Plan:
        _, progress = self.estimate_s(splits)
        by_volume = dict(zip(self.spatial, splits))
        stages = []
        for index, volume in enumerate(self.volumes):
            names = tuple(n.name for n in volume.nodes)
            if not volume.spatial:
                stages.append(Stage("single", names, device=progress.singles[index]))
                continue
            width = volume.nodes[-1].meta["layer"].output_shape[-1]
            tiles = tuple(Tile(Region((a, b), (0, width)), (Hop(d),)) for d, a, b in by_volume[index])
            stages.append(Stage("spatial", names, tiles=tiles))
        return Plan(self.model, self.input_shape, tuple(stages), planner=self.planner)

    def latency_s(self, splits: tuple[Parts, ...]) -> float:
        """The simulator's latency of one request (cached); the best split seen is kept in :attr:`best`."""
        if splits not in self.simulated:
            latency = simulate(self.graph, self.plan(splits), self.topology, self.cost, requests=1).latency_s
            self.simulated[splits] = latency
            if latency < self.best[0]:
                self.best = (latency, splits)
        self.history.append(self.simulated[splits])
        return self.simulated[splits]

    def config(self, step: int) -> tuple[float, float, float, float]:
        """(H, C, F, S) of a spatial volume's last layer (F, S of its last windowed layer; 1 if none)."""
        nodes = self.volumes[self.spatial[step]].nodes
        shape = nodes[-1].meta["layer"].output_shape
        windowed = [n.meta["layer"].attrs for n in nodes if "kernel" in n.meta["layer"].attrs]
        kernel = windowed[-1]["kernel"][0] if windowed else 1
        stride = windowed[-1].get("stride", (1, 1))[0] if windowed else 1
        return float(shape[-2]), float(shape[1]), float(kernel), float(stride)


class SplitEnv(gym.Env):
    """The MDP of eqs. 6-8: one step per spatial volume; reward ``reference_s / T`` after the last."""

    def __init__(self, problem: SplitProblem, reference_s: float):
        self.problem, self.reference_s = problem, reference_s
        count = len(problem.providers)
        self.action_space = spaces.Box(-1.0, 1.0, (count - 1,), np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, (count + 4,), np.float32)
        configs = np.array([problem.config(s) for s in range(len(problem.spatial))])
        self.scale = np.maximum(configs.max(axis=0), 1.0)
        self.progress, self.splits = problem.start(), []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.progress, self.splits = self.problem.start(), []
        return self._observe(), {}

    def step(self, action):
        parts = self.problem.parts(len(self.splits), np.asarray(action))
        self.splits.append(parts)
        self.problem.advance(self.progress, parts)
        done = len(self.splits) == len(self.problem.spatial)
        reward = self.reference_s / self.problem.latency_s(tuple(self.splits)) if done else 0.0
        return self._observe(), float(reward), done, False, {}

    def _observe(self) -> np.ndarray:
        step = len(self.splits)
        config = np.array(self.problem.config(step)) / self.scale if step < len(self.problem.spatial) else np.zeros(4)
        ready = [self.progress.ready_s[d] / self.reference_s for d in self.problem.providers]
        return np.concatenate([ready, config]).astype(np.float32)


class EpsilonGaussianNoise(ActionNoise):
    """Algorithm 2 lines 8-13: with probability ``1 - (episode * delta)^2`` add N(0, sigma^2), else none."""

    def __init__(self, size: int, sigma: float, delta: float, seed: int):
        super().__init__()
        self.size, self.sigma, self.delta = size, sigma, delta
        self.rng = np.random.default_rng(seed)
        self.episode = 1

    def __call__(self) -> np.ndarray:
        if self.rng.random() < 1.0 - (self.episode * self.delta) ** 2:
            return self.rng.normal(0.0, self.sigma, self.size)
        return np.zeros(self.size)

    def reset(self) -> None:
        self.episode += 1


class _DDPG(DDPG):
    """DDPG with the paper's two learning rates (stable-baselines3 gives actor and critic one)."""

    critic_learning_rate = CRITIC_LR

    def _update_learning_rate(self, optimizers) -> None:
        update_learning_rate(self.actor.optimizer, self.lr_schedule(self._current_progress_remaining))
        update_learning_rate(self.critic.optimizer, self.critic_learning_rate)


def osds(problem: SplitProblem, reference_s: float, episodes: int, seed: int) -> None:
    """Train DDPG for ``episodes`` episodes against the simulator, then roll the actor out once without noise.

    Every split decision tried is simulated; ``problem.best`` holds the best (``R_s*`` of Algorithm 2).
    """
    env = SplitEnv(problem, reference_s)
    count, steps = len(problem.providers), len(problem.spatial)
    variance = 0.1 + 0.9 * min(max((count - 4) / 12, 0.0), 1.0)  # paper V: 0.1 with 4 providers, 1 with 16
    agent = _DDPG("MlpPolicy", env, learning_rate=ACTOR_LR, buffer_size=max(episodes * steps, BATCH),
                  learning_starts=BATCH, batch_size=BATCH, gamma=GAMMA, train_freq=(1, "step"), gradient_steps=1,
                  action_noise=EpsilonGaussianNoise(count - 1, math.sqrt(variance), EPSILON_STEP, seed),
                  policy_kwargs={"net_arch": {"pi": ACTOR_LAYERS, "qf": CRITIC_LAYERS}}, seed=seed, device="cpu")
    agent.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default logger makes a /tmp/SB3-* folder a run
    agent.learn(total_timesteps=episodes * steps)
    observation, _ = env.reset()
    for _ in range(steps):
        action, _ = agent.predict(observation, deterministic=True)
        observation, *_ = env.step(action)


def outside_inputs(nodes) -> list[str]:
    """Names of the values the nodes read from outside their set, weights left out."""
    members = {n.name for n in nodes}
    return list(dict.fromkeys(s.name for n in nodes for s in n.all_input_nodes
                              if s.op != "get_attr" and s.name not in members))
