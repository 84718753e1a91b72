"""The CPU this process may use: its cgroup's quota (a testbed machine's cap) and the threads worth running."""

from __future__ import annotations

import math
import os
from pathlib import Path

from halocut.ir.errors import HalocutError


def cpu_quota() -> tuple[float, float] | None:
    """This process's CPU cap as (cores, period seconds), or None when it has none.

    From ``$HALOCUT_CPU_QUOTA`` ("CORES,PERIOD_S", which a testbed's Ray nodes run with: ``ip netns exec``
    mounts a fresh /sys, so the cgroup files are not visible there), else the cgroup files (v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``)."""
    given = os.environ.get("HALOCUT_CPU_QUOTA")
    if given:
        try:
            cores, period = (float(v) for v in given.split(","))
            return (cores, period) if cores > 0 and period > 0 else None
        except ValueError:
            return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            limit = Path("/sys/fs/cgroup", path.lstrip("/"), "cpu.max")
            if limit.exists():
                quota, period = limit.read_text().split()
                return None if quota == "max" else (int(quota) / int(period), int(period) / 1e6)
        elif "cpu" in controllers.split(","):
            base = Path("/sys/fs/cgroup/cpu", path.lstrip("/"))
            if (base / "cpu.cfs_quota_us").exists():
                quota = int((base / "cpu.cfs_quota_us").read_text())
                period = int((base / "cpu.cfs_period_us").read_text())
                return None if quota < 0 else (quota / period, period / 1e6)
    return None


CGROUP_ENV = "HALOCUT_CPU_CGROUP"  # a cgroup.procs file that a testbed's Ray workers join (cpu_cap_join)


def join_cpu_cap() -> bool:
    """Move this process into the CPU cgroup ``$HALOCUT_CPU_CGROUP`` names, if any; whether it did.

    A testbed runs each machine's Ray node (raylet, and the GCS on the head) outside its machine's cgroup, so
    that a node capped at a few percent of a core still starts and answers; the processes that compute (actors,
    the profiler's task) join the cap when they start."""
    procs = os.environ.get(CGROUP_ENV)
    if not procs:
        return False
    try:
        Path(procs).write_text(str(os.getpid()))
    except OSError as error:
        raise HalocutError(f"cannot join the CPU cap {procs}: {error.strerror}") from None
    return True


def usable_cores() -> int:
    """Threads worth running here: this machine's cores, or fewer under a CPU quota (threads beyond the quota only
    spin and wait on it: a testbed machine at 0.2 cores ran lenet5's layers 4x slower with 2 threads than 1)."""
    cores = os.cpu_count() or 1
    quota = cpu_quota()
    return cores if quota is None else max(1, min(cores, math.ceil(quota[0] - 1e-9)))
