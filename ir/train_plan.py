"""A training plan: the contract between ``halocut train-plan`` (the planner) and ``halocut train`` (the runtime).

JSON (schema ``train_plan.schema.json``), flat so that ``train-plan --json`` prints the plan itself:
``model``, ``input_shape``, ``batch``, ``policy``, the three ``workers`` (device, edge, cloud -> topology
names), the model's layer ``groups`` (names, so a plan for another model or grouping is refused), and either
a HierTrain schedule (``mapping`` {o, s, l} -> worker, ``m_s``, ``m_l``, ``b_o``, ``b_s``, ``b_l``; samples
in that order of the batch) or, for the model-parallel baselines, a ``chain`` (the worker of each group).
Everything else in the file (``t_total_s``, phases, bytes) is the planner's report.

>>> plan = TrainPlan.from_json({"format": FORMAT, "model": "lenet5", "input_shape": [1, 3, 32, 32], "batch": 8,
...     "policy": "hiertrain", "workers": {"device": "pi", "edge": "nuc", "cloud": "gpu"}, "groups": ["a", "b"],
...     "mapping": {"o": "gpu", "s": "pi", "l": "nuc"}, "m_s": 1, "m_l": 2, "b_o": 4, "b_s": 3, "b_l": 1,
...     "chain": None, "t_total_s": 0.5})
>>> plan.samples("s"), plan.layers("l")
(range(4, 7), 2)
>>> TrainPlan.from_json({**plan.to_json(), "b_s": 4}, "p.json")
Traceback (most recent call last):
halocut.ir.errors.HalocutError: p.json: b_o + b_s + b_l = 9, expected the batch 8
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from halocut.ir.errors import HalocutError
from halocut.ir.files import read_json, write_json
from halocut.ir.schema import check, shipped_validator

FORMAT = "halocut-train-plan/1"


@dataclass(frozen=True)
class TrainPlan:
    model: str
    input_shape: tuple[int, ...]
    batch: int
    policy: str
    workers: dict[str, str]  # device / edge / cloud -> topology device
    groups: tuple[str, ...]
    mapping: dict[str, str] | None = None  # o / s / l -> topology device
    m_s: int | None = None
    m_l: int | None = None
    b: tuple[int, int, int] | None = None  # (b_o, b_s, b_l)
    chain: tuple[str, ...] | None = None
    compress_bits: int = 32
    report: dict = field(default_factory=dict, compare=False)  # t_total_s and the rest of the planner's report

    @property
    def is_hiertrain(self) -> bool:
        """A HierTrain schedule (tasks O, S, L), which ``halocut train`` runs."""
        return self.mapping is not None

    def layers(self, task: str) -> int:
        """How many groups the task trains: N for O, m_s for S, m_l for L."""
        return {"o": len(self.groups), "s": self.m_s, "l": self.m_l}[task]

    def samples(self, task: str) -> range:
        """The task's rows of each batch: O first, then S, then L."""
        b_o, b_s, b_l = self.b
        return {"o": range(0, b_o), "s": range(b_o, b_o + b_s), "l": range(b_o + b_s, b_o + b_s + b_l)}[task]

    def to_json(self) -> dict:
        schedule = {"mapping": self.mapping, "m_s": self.m_s, "m_l": self.m_l,
                    "b_o": self.b[0] if self.b else None, "b_s": self.b[1] if self.b else None,
                    "b_l": self.b[2] if self.b else None}
        return {**self.report, "format": FORMAT, "model": self.model, "input_shape": list(self.input_shape),
                "batch": self.batch, "policy": self.policy, "workers": dict(self.workers),
                "groups": list(self.groups), **schedule, "chain": list(self.chain) if self.chain else None,
                "compress_bits": self.compress_bits, "t_total_s": self.report.get("t_total_s", 0.0)}

    @staticmethod
    def from_json(data: object, source: str = "train plan") -> TrainPlan:
        """Build from parsed JSON; a structural or semantic error names ``source`` and the field, in one line."""
        check(shipped_validator(__package__, "train_plan.schema.json"), data, source)
        names = set(data["workers"].values())
        if len(names) != 3:
            raise HalocutError(f"{source}: workers: device, edge and cloud must be three different machines")
        plan = TrainPlan(data["model"], tuple(data["input_shape"]), data["batch"], data["policy"],
                         dict(data["workers"]), tuple(data["groups"]), data["mapping"], data["m_s"], data["m_l"],
                         None if data["b_o"] is None else (data["b_o"], data["b_s"], data["b_l"]),
                         None if data["chain"] is None else tuple(data["chain"]), data.get("compress_bits", 32),
                         {k: v for k, v in data.items() if k not in _FIELDS})
        plan._check(source, names)
        return plan

    def _check(self, source: str, names: set[str]) -> None:
        if (self.mapping is None) == (self.chain is None):
            raise HalocutError(f"{source}: give either a HierTrain schedule (mapping, m_s, m_l, b_o, b_s, b_l) "
                               "or a chain, not both or neither")
        if self.chain is not None:
            if len(self.chain) != len(self.groups):
                raise HalocutError(f"{source}: chain: {len(self.chain)} workers for {len(self.groups)} groups")
            unknown = [w for w in self.chain if w not in names]
            if unknown:
                raise HalocutError(f"{source}: chain: '{unknown[0]}' is not one of the workers {sorted(names)}")
            return
        if None in (self.m_s, self.m_l, self.b) or None in self.b:
            raise HalocutError(f"{source}: a HierTrain schedule needs m_s, m_l, b_o, b_s and b_l")
        if set(self.mapping.values()) != names:
            raise HalocutError(f"{source}: mapping: o, s and l must be the three workers {sorted(names)}, "
                               f"got {self.mapping}")
        n = len(self.groups)
        if not 0 <= self.m_s <= self.m_l <= n:
            raise HalocutError(f"{source}: m_s = {self.m_s}, m_l = {self.m_l}: need 0 <= m_s <= m_l <= {n} "
                               "(the number of groups)")
        if sum(self.b) != self.batch:
            raise HalocutError(f"{source}: b_o + b_s + b_l = {sum(self.b)}, expected the batch {self.batch}")
        for task, m, b in (("s", self.m_s, self.b[1]), ("l", self.m_l, self.b[2])):
            if m == 0 and b:
                raise HalocutError(f"{source}: b_{task} = {b} but m_{task} = 0: a task with no layers takes "
                                   "no samples (eqs. 14-15)")

    def save(self, path: str | Path, force: bool = True) -> Path:
        return write_json(path, self.to_json(), force)

    @staticmethod
    def load(path: str | Path) -> TrainPlan:
        return TrainPlan.from_json(read_json(path), str(path))


_FIELDS = {"format", "model", "input_shape", "batch", "policy", "workers", "groups", "mapping", "m_s", "m_l",
           "b_o", "b_s", "b_l", "chain", "compress_bits"}
