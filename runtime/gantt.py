"""Gantt charts of simulated (or measured) timelines: one row per device and per link, PNG via matplotlib.

>>> from halocut.runtime.simulate import Busy
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "t.png"
>>> plot_timeline([Busy("pi", 0.0, 0.1, "stage 0", 0, "compute")], path, "demo").exists()
True
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from halocut.ir.files import write_bytes  # noqa: E402


def plot_timeline(intervals, path: str | Path, title: str, devices: list[str] | None = None,
                  force: bool = True) -> Path:
    """Write a Gantt chart: compute intervals per device, transfers per link, colour per request."""
    path = Path(path)
    compute = [i for i in intervals if i.kind == "compute"]
    transfers = [i for i in intervals if i.kind == "transfer"]
    rows = list(dict.fromkeys((devices or []) + [i.resource for i in compute])) + \
        list(dict.fromkeys(i.resource for i in transfers))
    requests = sorted({i.request for i in intervals})
    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.6))
    for interval in intervals:
        y = rows.index(interval.resource)
        hatch = "//" if interval.kind == "transfer" else None
        axes.barh(y, interval.end_s - interval.start_s, left=interval.start_s, height=0.6,
                  color=colours(interval.request % 10), edgecolor="black", linewidth=0.4, hatch=hatch)
    axes.set_yticks(range(len(rows)), rows)
    axes.invert_yaxis()
    axes.set_xlabel("time (s)")
    axes.set_title(title)
    axes.grid(axis="x", linestyle=":", linewidth=0.5)
    legend = [Patch(color=colours(r % 10), label=f"request {r}") for r in requests[:10]]
    legend.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="transfer"))
    axes.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(len(legend), 6),
                fontsize="small", frameon=False)
    return _save(figure, Path(path), force)


SCHEDULE_COLOURS = {"device": "tab:blue", "edge": "tab:orange", "cloud": "tab:green", "edge-cloud": "tab:purple"}


def plot_schedule(schedule, path: str | Path, title: str | None = None, measured: dict | None = None,
                  force: bool = True) -> Path:
    """A multi-task schedule (:class:`~halocut.ir.schedule.Schedule`): one row per task, its wait from arrival
    to start in grey, its run coloured by resource choice and labelled with its edge server; ``measured``
    (task -> (start_s, end_s)) adds the measured run as a thin black bar."""
    path = Path(path)
    tasks = sorted(schedule.tasks, key=lambda t: (t.arrival_s, t.name))
    figure, axes = plt.subplots(figsize=(11, min(0.28 * len(tasks) + 1.8, 40)))
    for y, task in enumerate(tasks):
        if task.start_s > task.arrival_s:
            axes.barh(y, task.start_s - task.arrival_s, left=task.arrival_s, height=0.5, color="lightgrey")
        axes.barh(y, task.latency_s, left=task.start_s, height=0.6, color=SCHEDULE_COLOURS[task.choice],
                  edgecolor="black", linewidth=0.3)
        if task.edge and len(tasks) <= 60:
            axes.text(task.end_s, y, f" {task.edge}", va="center", fontsize="x-small")
        if measured and task.name in measured:
            start, end = measured[task.name]
            axes.barh(y, end - start, left=start, height=0.15, color="black")
    axes.set_yticks(range(len(tasks)), [t.name for t in tasks], fontsize="x-small" if len(tasks) > 30 else None)
    axes.invert_yaxis()
    axes.set_xlabel("time (s)")
    axes.set_title(title or f"{schedule.policy} on {schedule.workload}: total delay {schedule.total_delay_s:.4g} s")
    axes.grid(axis="x", linestyle=":", linewidth=0.5)
    legend = [Patch(color=c, label=k) for k, c in SCHEDULE_COLOURS.items()] + [Patch(color="lightgrey", label="wait")]
    if measured:
        legend.append(Patch(color="black", label="measured"))
    below = 0.1 + 0.18 / figure.get_size_inches()[1]  # under the axis label, whatever the figure's height
    axes.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -below), ncol=len(legend),
                fontsize="small", frameon=False)
    return _save(figure, Path(path), force)


def _save(figure, path: Path, force: bool = True) -> Path:
    """Lay the figure out, write it as a PNG whole or not at all (its folder made) and free it."""
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, dpi=110, format="png")
    plt.close(figure)
    return write_bytes(path, png.getvalue(), force)
