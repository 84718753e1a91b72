"""Make and remove a testbed (:mod:`.layout` decides it): namespaces, bridges, veths, shaping, CPU cgroups, Ray nodes.

Everything ``up`` makes is written to the testbed's state file *before* it is made, so ``down`` removes exactly
that (and nothing else), from a new shell or after a crashed ``up``: namespaces by their recorded names (a
namespace takes its veths, qdiscs and routes with it), cgroups by their recorded paths, processes by their
recorded process ids (a Ray node started with ``--block`` ends its own children on SIGTERM).

Shaping (egress, so each direction of a link is shaped at its sender; segmentation offload capped at one
MTU, or a message's GSO super-packet would pass a short htb queue at once): every machine's veth into a segment has
an htb root with one class per link of its own on that segment, at the link's bandwidth, selected by the
destination host address whose route starts on that link; traffic to any other address takes the default
class, shaped at the slowest of the member's links. A shared medium is shaped once more for everyone on it:
the hub redirects every port's ingress into one ifb shaped at the medium's bandwidth. This kernel may lack
``netem``: link latency is then not emulated (:func:`netem_available` says which; the state records it).

CPU: each machine's computing processes (its Ray workers: the deployment's actors, the profiler's task) run in
a cgroup (v2 ``cpu.max`` where the cpu controller is enabled, else
cgroup v1 ``cpu.cfs_quota_us``) whose quota keeps the topology's speed ratios: the fastest device gets
``cpu_scale`` cores (auto: one, or less so that all of them fit this machine's cores), the others their share of
its peak FLOP/s (a relay that computes nothing: the slowest device's share; at least MIN_CORES), over a 10 ms
period (:func:`cpu_period_us`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from halocut.ir.errors import HalocutError
from halocut.ir.files import write_json
from halocut.runtime.cpu import CGROUP_ENV
from halocut.runtime.testbed.layout import Layout, check_name, plan_testbed
from halocut.targets.topology import Topology, load_topology

RAY_PORT = 6379
MIN_CORES = 0.05  # a slower device is clamped to this (up says so): under it, profiling it would take many minutes
STOP_WAIT_S = 20.0  # how long a Ray node may take to end after SIGTERM, before SIGKILL
CGROUP_ROOT = Path("/sys/fs/cgroup")


GSO_MAX_BYTES = 1500  # one Ethernet MTU: the shaper sees packets, not a message's worth at once

def state_dir() -> Path:
    """Where testbed state files live: ``$HALOCUT_STATE`` or ``~/.local/state/halocut``, then ``testbeds/``."""
    return Path(os.environ.get("HALOCUT_STATE", "~/.local/state/halocut")).expanduser() / "testbeds"


@dataclass
class State:
    """What a testbed holds, written before each thing is made."""

    name: str
    topology: str
    namespaces: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    processes: list[dict] = field(default_factory=list)  # {"machine", "pid", "what", "start"}
    paths: list[str] = field(default_factory=list)  # folders its Ray nodes write (temp dirs, logs)
    machines: dict[str, dict] = field(default_factory=dict)  # name -> namespace, address, cores, cgroup
    head: str | None = None  # the Ray head's address
    netem: bool = False
    cpu_scale: float = 1.0  # cores of the fastest device
    clamped: list[str] = field(default_factory=list)  # machines given MIN_CORES, more than their share
    ready: bool = False

    @property
    def head_namespace(self) -> str | None:
        """The namespace of the Ray head (the requester's node, started first)."""
        return self.machines[self.processes[0]["machine"]]["namespace"] if self.processes else None

    @property
    def path(self) -> Path:
        return state_dir() / f"{self.name}.json"

    def save(self) -> None:
        write_json(self.path, self.__dict__, force=True)

    @classmethod
    def load(cls, name: str) -> "State":
        path = state_dir() / f"{check_name(name)}.json"
        if not path.exists():
            raise HalocutError(f"testbed '{name}': no state file {path} (see halocut testbed status)")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise HalocutError(f"testbed '{name}': state file {path} is damaged ({error}); remove what it "
                               f"names by hand") from None


def require_root() -> None:
    if os.geteuid() != 0:
        raise HalocutError("testbed: needs root (network namespaces, tc and cgroups)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise HalocutError(f"testbed: '{tool}' (iproute2) is not installed")


def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (link latency); tried on a veth in a scratch namespace."""
    scratch = f"halocut-probe-{os.getpid()}"
    try:
        _ip("netns", "add", scratch)
        _ip("-n", scratch, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
        done = subprocess.run(["tc", "-n", scratch, "qdisc", "add", "dev", "probe0", "root", "netem", "delay", "1ms"],
                              capture_output=True)
        return done.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", scratch], capture_output=True)


def up(topology_path: str | Path, name: str = "bed", cpu_scale: str = "auto", ray: bool = True,
       log=print) -> State:
    """Make the testbed for a topology; on any failure, remove what was made and raise one line."""
    require_root()
    _scale(cpu_scale)  # a bad value is refused before anything is made
    topology = load_topology(topology_path)
    layout = plan_testbed(topology, check_name(name))
    state = State(name, str(Path(topology_path).resolve()))
    if state.path.exists():
        raise HalocutError(f"testbed '{name}' already exists ({state.path}); halocut testbed down --name {name}")
    taken = set(_namespaces()) & set(layout.namespaces)
    if taken:
        raise HalocutError(f"testbed '{name}': namespace {sorted(taken)[0]} exists already and was not made by "
                           f"halocut's state; remove it or choose another --name")
    state.netem = netem_available()
    state.save()
    try:
        _network(layout, topology, state)
        _cpu(layout, topology, state, cpu_scale)
        if ray:
            _ray_nodes(layout, topology, state)
        state.ready = True
        state.save()
    except BaseException as error:
        logs = state.path.with_suffix("")
        kept = Path(tempfile.mkdtemp(prefix=f"halocut-testbed-{name}-logs-")) if logs.is_dir() else None
        if kept is not None:
            shutil.copytree(logs, kept, dirs_exist_ok=True)
        down(name, log=lambda *_: None)
        if isinstance(error, HalocutError) and kept is not None:
            raise HalocutError(f"{error}; everything up made is removed, its Ray logs are kept in {kept}") from None
        raise
    scaled = ", ".join(f"{m} {info['cores']:.2f}" for m, info in state.machines.items())
    if state.clamped:
        scaled += (f" ({', '.join(state.clamped)} at least {MIN_CORES:g} cores, faster than their share of the "
                   f"fastest)")
    log(f"testbed '{name}' up: {len(layout.machines)} machines, {len(layout.segments)} segments; CPU cores "
        f"(fastest device = {state.cpu_scale:.3g}): {scaled}; link latency "
        f"{'emulated by netem' if state.netem else 'NOT emulated (this kernel has no netem)'}")
    return state


def down(name: str, log=print) -> list[str]:
    """Remove what the state file of testbed ``name`` records, processes first; returns what was removed."""
    require_root()
    state = State.load(name)
    removed = []
    for process in reversed(state.processes):
        if _end(process["pid"], process.get("start")):
            removed.append(f"process {process['pid']} ({process['what']})")
    existing = set(_namespaces())
    for namespace in reversed(state.namespaces):
        if namespace in existing:
            _ip("netns", "del", namespace)
            removed.append(f"namespace {namespace}")
    for cgroup in reversed(state.cgroups):
        path = Path(cgroup)
        if path.is_dir():
            _remove_cgroup(path)
            removed.append(f"cgroup {cgroup}")
    for folder in reversed(state.paths):
        if Path(folder).is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(f"folder {folder}")
    state.path.unlink()
    log(f"testbed '{name}' down: removed {len(removed)} things ({', '.join(removed) or 'nothing was left'})")
    return removed


def status() -> list[dict]:
    """Every testbed with a state file: its machines and whether what it records still exists."""
    beds = []
    existing = set(_namespaces())
    for path in sorted(state_dir().glob("*.json")):
        state = State.load(path.stem)
        beds.append({"name": state.name, "topology": state.topology, "ready": state.ready, "head": state.head,
                     "netem": state.netem, "machines": state.machines,
                     "namespaces_missing": [n for n in state.namespaces if n not in existing],
                     "processes_alive": sum(_alive(p["pid"], p.get("start")) for p in state.processes),
                     "processes": len(state.processes)})
    return beds


# --- the network

def _network(layout: Layout, topology: Topology, state: State) -> None:
    for namespace in layout.namespaces:
        state.namespaces.append(namespace)
        state.save()
        _ip("netns", "add", namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")
    for machine in layout.machines:
        _ip("-n", machine.namespace, "addr", "add", f"{machine.address}/32", "dev", "lo")
        _run(["ip", "netns", "exec", machine.namespace, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for key in ("all", "default", "lo"):
            _run(["ip", "netns", "exec", machine.namespace, "sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0"])
        state.machines[machine.name] = {"namespace": machine.namespace, "address": machine.address}
    for segment in layout.segments:
        _ip("-n", layout.hub, "link", "add", segment.bridge, "type", "bridge")
        _ip("-n", layout.hub, "link", "set", segment.bridge, "up")
        namespace_of = {m.name: m.namespace for m in layout.machines}
        for member in segment.members:
            inside = namespace_of[member.machine]
            _ip("link", "add", "name", member.port, "netns", layout.hub, "type", "veth", "peer", "name",
                member.interface, "netns", inside)
            _ip("-n", layout.hub, "link", "set", member.port, "master", segment.bridge, "up")
            _ip("-n", inside, "addr", "add", f"{member.address}/24", "dev", member.interface)
            # no GSO super-packets: htb lets one through whole while it has tokens and pays the debt later, so a
            # 49 KB message after an idle spell crossed an 8.8 Mbps link in 0.3 ms (44.7 ms once segmented)
            _ip("-n", inside, "link", "set", member.interface, "gso_max_size", str(GSO_MAX_BYTES))
            _ip("-n", inside, "link", "set", member.interface, "up")
            _run(["ip", "netns", "exec", inside, "sysctl", "-qw", f"net.ipv4.conf.{member.interface}.rp_filter=0"])
        _shape(layout, segment, namespace_of)
    address_of = {m.name: m.address for m in layout.machines}
    for route in layout.routes:
        _ip("-n", layout.machine(route.machine).namespace, "route", "add", f"{route.destination}/32", "via",
            route.via, "dev", route.interface, "src", address_of[route.machine])


def _shape(layout: Layout, segment, namespace_of: dict[str, str]) -> None:
    for member in segment.members:
        classes = [shaped for machine, shaped in segment.classes if machine == member.machine]
        if not classes:
            continue
        where = ["-n", namespace_of[member.machine]]
        device = ["dev", member.interface]
        slowest = min(c.rate_bps for c in classes)
        _tc(*where, "qdisc", "add", *device, "root", "handle", "1:", "htb", "default", "99", "r2q", "100")
        _tc(*where, "class", "add", *device, "parent", "1:", "classid", "1:99", "htb", *_rate(slowest))
        for k, shaped in enumerate(classes, start=10):
            _tc(*where, "class", "add", *device, "parent", "1:", "classid", f"1:{k}", "htb", *_rate(shaped.rate_bps))
            for destination in shaped.destinations:
                _tc(*where, "filter", "add", *device, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                    "match", "ip", "dst", f"{destination}/32", "flowid", f"1:{k}")
    if segment.medium_bps:
        hub = ["-n", layout.hub]
        _ip(*hub, "link", "add", segment.ifb, "type", "ifb")
        _ip(*hub, "link", "set", segment.ifb, "up")
        _tc(*hub, "qdisc", "add", "dev", segment.ifb, "root", "handle", "1:", "htb", "default", "1", "r2q", "100")
        _tc(*hub, "class", "add", "dev", segment.ifb, "parent", "1:", "classid", "1:1", "htb",
            *_rate(segment.medium_bps))
        for member in segment.members:
            _tc(*hub, "qdisc", "add", "dev", member.port, "handle", "ffff:", "ingress")
            _tc(*hub, "filter", "add", "dev", member.port, "parent", "ffff:", "protocol", "all", "u32", "match",
                "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", segment.ifb)


def _rate(bps: float) -> list[str]:
    rate = f"{max(int(bps), 8000)}bit"
    return ["rate", rate, "ceil", rate]


# --- CPU

def _scale(cpu_scale: str, shares: list[float] | None = None) -> float:
    """Cores of the fastest device: a number, or auto: one core, less where the devices' shares of the fastest
    (``shares``) would add up to more than this machine's cores."""
    if cpu_scale == "auto":
        return min(1.0, (os.cpu_count() or 1) / sum(shares)) if shares else 1.0
    try:
        value = float(cpu_scale)
    except ValueError:
        value = -1.0
    if not 0 < value <= (os.cpu_count() or 1):
        raise HalocutError(f"--cpu-scale {cpu_scale!r}: 'auto' or a number of cores in (0, {os.cpu_count()}]")
    return value


def cpu_period_us(cores: float) -> int:
    """The CFS period for a quota of ``cores``: 10 ms (a short period keeps a capped device's slowness even
    over a layer of a few milliseconds), longer where the quota would fall under the kernel's 1 ms minimum.

    >>> cpu_period_us(0.5), cpu_period_us(0.05)
    (10000, 20000)
    """
    return min(1_000_000, max(10_000, int(1000 / cores + 0.5)))


def _cpu(layout: Layout, topology: Topology, state: State, cpu_scale: str) -> None:
    fastest = max((d.peak_flops for d in topology.devices), default=0.0) or 1.0
    shares = {m.name: topology.device(m.name).peak_flops / fastest for m in layout.machines}
    slowest = min((v for v in shares.values() if v > 0), default=1.0)
    shares = {m: v if v > 0 else slowest for m, v in shares.items()}  # a relay runs only its Ray node
    scale = _scale(cpu_scale, list(shares.values()))
    v2 = (CGROUP_ROOT / "cgroup.controllers").exists() and \
        "cpu" in (CGROUP_ROOT / "cgroup.controllers").read_text().split()
    base = CGROUP_ROOT if v2 else CGROUP_ROOT / "cpu"
    if not v2 and not (base / "cpu.cfs_quota_us").exists():
        raise HalocutError("testbed: no CPU cgroup controller (neither cgroup v2 'cpu' nor v1 'cpu')")
    state.cpu_scale = scale
    for machine in layout.machines:
        cores = max(MIN_CORES, scale * shares[machine.name])
        if cores > scale * shares[machine.name]:
            state.clamped.append(machine.name)
        path = base / f"{machine.namespace}"
        state.cgroups.append(str(path))
        state.save()
        path.mkdir()
        period = cpu_period_us(cores)
        quota = max(1000, int(cores * period))
        if v2:
            (path / "cpu.max").write_text(f"{quota} {period}")
        else:
            (path / "cpu.cfs_period_us").write_text(str(period))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
        state.machines[machine.name].update(cores=quota / period, cgroup=str(path), cpu_period_us=period)
    state.save()


def _remove_cgroup(path: Path) -> None:
    """A cgroup is removed once empty: any process still in it (one this testbed started) is moved out first."""
    procs = path / "cgroup.procs"
    parent = path.parent / "cgroup.procs"
    for pid in (procs.read_text().split() if procs.exists() else []):
        try:
            parent.write_text(pid)
        except OSError:
            pass
    for _ in range(50):
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.1)
    raise HalocutError(f"testbed: cgroup {path} could not be removed (processes still in it)")


# --- Ray nodes

def _ray_nodes(layout: Layout, topology: Topology, state: State) -> None:
    """A Ray node per machine in its namespace, the requester's the head. The node's own services (raylet, the
    head's GCS) run outside the machine's CPU cgroup, so that a machine capped at a few percent of a core still
    starts and answers within seconds; its workers join the cgroup when they start (:func:`cpu.join_cpu_cap`)."""
    requester = topology.requester.name
    ordered = sorted(layout.machines, key=lambda m: m.name != requester)
    head = f"{layout.machine(requester).address}:{RAY_PORT}"
    ray = str(Path(sys.executable).with_name("ray"))
    logs = state.path.with_suffix("")
    state.paths.append(str(logs))
    state.save()
    logs.mkdir(parents=True, exist_ok=True)
    for machine in ordered:
        info = state.machines[machine.name]
        cores = max(1, round(info["cores"] + 0.499))
        role = (["--head", f"--port={RAY_PORT}", "--include-dashboard=false"] if machine.name == requester
                else [f"--address={head}"])
        temp = f"/tmp/ray-{machine.namespace}"
        state.paths.append(temp)
        state.save()
        command = [ray, "start", "--block", *role, f"--node-ip-address={machine.address}", f"--temp-dir={temp}",
                   f"--num-cpus={cores}", f"--resources={json.dumps({machine.name: 1})}", "--disable-usage-stats"]
        cap = {"HALOCUT_CPU_QUOTA": f"{info['cores']:.6g},{info['cpu_period_us'] / 1e6:g}",  # cpu.cpu_quota
               CGROUP_ENV: f"{info['cgroup']}/cgroup.procs"}  # cpu.join_cpu_cap
        process = _start_in(machine.namespace, command, logs / f"{machine.name}.log", cap)
        state.processes.append({"machine": machine.name, "pid": process.pid, "what": "ray node",
                                "start": _start_time(process.pid)})
        state.save()
        if machine.name == requester:
            state.head = head
            state.save()
            _wait_port(machine.namespace, machine.address, RAY_PORT, process)
    _wait_nodes(layout, state)


def ray_environment() -> dict[str, str]:
    """What every node and driver of a testbed runs with: the same RAY_AUTH_MODE (token auth would need one token
    handed to every namespace; a testbed's nodes are on one machine, reachable only through its namespaces)."""
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _cgroup_mount() -> str:
    """Shell lines that mount this machine's CPU cgroup hierarchy again under /sys/fs/cgroup: ``ip netns exec``
    mounts a fresh /sys, which hides it, and the node's workers must reach their cgroup to join it."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, kind, options = line.split()[:4]
        if kind == "cgroup2" and point == str(CGROUP_ROOT):
            return f"mount -t cgroup2 none {CGROUP_ROOT}"
        if kind == "cgroup" and point == str(CGROUP_ROOT / "cpu"):
            controllers = ",".join(o for o in options.split(",") if o in ("cpu", "cpuacct"))
            return (f"mount -t tmpfs none {CGROUP_ROOT} && mkdir -p {point} && "
                    f"mount -t cgroup -o {controllers} cgroup {point}")
    raise HalocutError(f"testbed: no CPU cgroup hierarchy mounted at {CGROUP_ROOT} or {CGROUP_ROOT / 'cpu'}")


def _start_in(namespace: str, command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    script = _cgroup_mount() + ' && exec "$@"'  # in the private mount namespace ip netns exec made
    with open(log, "ab") as out:
        return subprocess.Popen(["ip", "netns", "exec", namespace, "sh", "-c", script, "sh", *command], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**ray_environment(), **(env or {})}, start_new_session=True)


def _wait_port(namespace: str, address: str, port: int, process: subprocess.Popen, timeout_s: float = 60) -> None:
    probe = (f"import socket,sys\ns=socket.socket();s.settimeout(0.5)\n"
             f"sys.exit(s.connect_ex(('{address}',{port})))")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HalocutError(f"testbed: the Ray head in {namespace} ended (exit {process.returncode}); its log is "
                               f"in {state_dir()}")
        if subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", probe]).returncode == 0:
            return
        time.sleep(0.5)
    raise HalocutError(f"testbed: the Ray head in {namespace} did not listen on {address}:{port} within "
                       f"{timeout_s:.0f} s")


def _wait_nodes(layout: Layout, state: State, timeout_s: float = 90) -> None:
    """Until every machine's resource is in the cluster, asked from the head's namespace."""
    head_ns = state.head_namespace
    probe = ("import ray,json,sys\nray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
             "print(json.dumps(sorted(ray.cluster_resources())))")
    deadline = time.monotonic() + timeout_s
    wanted = {m.name for m in layout.machines}
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            done = subprocess.run(["ip", "netns", "exec", head_ns, sys.executable, "-c", probe, state.head],
                                  capture_output=True, text=True, env=ray_environment(),
                                  timeout=max(5.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            break
        if done.returncode == 0 and done.stdout.strip():
            seen = set(json.loads(done.stdout.strip().splitlines()[-1])) & wanted
            if seen == wanted:
                return
        time.sleep(1.0)
    raise HalocutError(f"testbed: Ray nodes of {sorted(wanted - seen)} did not join the head within "
                       f"{timeout_s:.0f} s")


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): a recorded pid is ended only if it is still ours."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    return _start_time(pid) is not None and (start is None or _start_time(pid) == start)


def _end(pid: int, start: str | None) -> bool:
    """SIGTERM the recorded process (and its process group, which it leads), SIGKILL after STOP_WAIT_S."""
    if not _alive(pid, start):
        return False
    for sig, wait in ((signal.SIGTERM, STOP_WAIT_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not _alive(pid, start):
                return True
            time.sleep(0.1)
    return True


# --- commands

def _namespaces() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _tc(*args: str) -> None:
    _run(["tc", *args])


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        reason = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[0]
        raise HalocutError(f"testbed: '{' '.join(command)}' failed: {reason}")
