"""A multi-task schedule (DeePar, paper 000, Sec. IV-B): per task its resource choice, cuts, start, end and
bandwidths. The one contract between the scheduler (planning), its replay checker and ``halocut schedule
--run`` (runtime); JSON-serialisable.

``choice`` is one of ``device``, ``edge``, ``cloud``, ``edge-cloud`` (the paper's w_{i,0}, w_{i,j},
w_{i,j+m}, w_{i,j+2m}); ``index`` is that j (0 .. 3m); ``cuts`` are (c1, c2), compute nodes before each
cut. A task's delay is ``end_s - arrival_s``: its wait plus eqs. 1-6 (``latency_s``).

>>> task = ScheduledTask("t1", "phone-1", "lenet5", (1, 3, 32, 32), 10, "edge", "edge-1", 1, (3, 12), 0.0, 0.5, 1.5,
...                      1e8, 0.0)
>>> schedule = Schedule("deepar", "w", (task,), 0.01)
>>> schedule.total_delay_s, Schedule.from_json(schedule.to_json()) == schedule
(1.5, True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from halocut.ir.errors import HalocutError
from halocut.ir.files import read_json, write_json

CHOICES = ("device", "edge", "cloud", "edge-cloud")


@dataclass(frozen=True)
class ScheduledTask:
    name: str
    device: str
    model: str
    input_shape: tuple[int, ...]
    samples: int
    choice: str
    edge: str | None
    index: int  # j in 0 .. 3m
    cuts: tuple[int, int]
    arrival_s: float
    start_s: float
    end_s: float
    downlink_bps: float  # b_i^1 (0 when unused)
    uplink_bps: float  # b_i^2 (0 when unused)
    decision_s: float = field(default=0.0, compare=False)  # scheduler wall time for this task (reported only)

    @property
    def latency_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def delay_s(self) -> float:
        return self.end_s - self.arrival_s


@dataclass(frozen=True)
class Schedule:
    policy: str
    workload: str
    tasks: tuple[ScheduledTask, ...]
    scheduling_time_s: float = field(default=0.0, compare=False)

    @property
    def total_delay_s(self) -> float:
        return sum(t.delay_s for t in self.tasks)

    @property
    def total_latency_s(self) -> float:
        return sum(t.latency_s for t in self.tasks)

    def task(self, name: str) -> ScheduledTask:
        return next(t for t in self.tasks if t.name == name)

    def to_json(self) -> dict:
        tasks = [{**asdict(t), "input_shape": list(t.input_shape), "cuts": list(t.cuts), "latency_s": t.latency_s,
                  "delay_s": t.delay_s} for t in self.tasks]
        return {"policy": self.policy, "workload": self.workload, "total_delay_s": self.total_delay_s,
                "total_latency_s": self.total_latency_s, "scheduling_time_s": self.scheduling_time_s,
                "tasks": tasks}

    @classmethod
    def from_json(cls, data: dict, source: str = "schedule") -> "Schedule":
        try:
            tasks = tuple(ScheduledTask(**{**{k: v for k, v in t.items() if k not in ("latency_s", "delay_s")},
                                           "input_shape": tuple(t["input_shape"]), "cuts": tuple(t["cuts"])})
                          for t in data["tasks"])
            for i, t in enumerate(tasks):
                if t.choice not in CHOICES:
                    raise HalocutError(f"{source}: tasks[{i}].choice: '{t.choice}' is not one of {', '.join(CHOICES)}")
                _check_types(t, f"{source}: tasks[{i}]")
            return cls(data["policy"], data["workload"], tasks, data.get("scheduling_time_s", 0.0))
        except (KeyError, TypeError) as error:
            raise HalocutError(f"{source}: not a halocut schedule ({type(error).__name__}: {error})") from None

    def save(self, path: str | Path, force: bool = True) -> Path:
        return write_json(path, self.to_json(), force)

    @classmethod
    def load(cls, path: str | Path) -> "Schedule":
        return cls.from_json(read_json(path), str(path))


_NUMBERS = ("arrival_s", "start_s", "end_s", "downlink_bps", "uplink_bps", "decision_s")


def _check_types(task: ScheduledTask, where: str) -> None:
    """A schedule file is read from users: every field of the type the checker and the runtime compute with."""
    def integer(value):
        return isinstance(value, int) and not isinstance(value, bool)

    wrong = [f for f in ("name", "device", "model") if not isinstance(getattr(task, f), str)]
    wrong += [f for f in _NUMBERS if not (integer(getattr(task, f)) or isinstance(getattr(task, f), float))]
    wrong += [f for f in ("samples", "index") if not integer(getattr(task, f))]
    if not (task.edge is None or isinstance(task.edge, str)):
        wrong.append("edge")
    if len(task.cuts) != 2 or not all(integer(c) for c in task.cuts):
        wrong.append("cuts")
    if not all(integer(d) for d in task.input_shape):
        wrong.append("input_shape")
    if wrong:
        raise HalocutError(f"{where}.{wrong[0]}: {getattr(task, wrong[0])!r} is not "
                           f"{_EXPECTED.get(wrong[0], 'a number')}")


_EXPECTED = {"name": "a string", "device": "a string", "model": "a string", "edge": "a string or null",
             "samples": "an integer", "index": "an integer", "cuts": "two integers (c1, c2)",
             "input_shape": "a list of integers"}
