"""What a testbed measures about itself: commands run from a machine's namespace, round-trip times of its links,
per-link traffic during a run, and the profiles of its machines (``halocut testbed profile``).

Traffic per link and direction comes from the htb class the testbed shaped it with (:mod:`.bed`): its byte
counter is exact. The seconds a direction was busy come from sampling, every SAMPLE_S, the byte counter of the
sender's veth port in the hub (the port receives what the machine sends): an interval in which the counter
moved counts as busy. The achieved rate is bytes over busy seconds; the sampling rounds every burst up to whole
intervals, so a short burst reads slower than it ran (a 12 KB tensor on 20 Mbps is 5 ms: one or two samples).
The peak rate is the most any PEAK_WINDOW_S moved: what a tensor long enough to fill the window reached. The
bytes are all the link carried: the tensors and Ray's own messages (task calls, object locations, heartbeats).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from halocut.ir.errors import HalocutError
from halocut.ir.files import check_output, read_yaml, write_json, write_text
from halocut.runtime.testbed.bed import State, ray_environment
from halocut.runtime.testbed.layout import Layout, plan_testbed
from halocut.targets.topology import load_topology

SAMPLE_S = 0.005
PEAK_WINDOW_S = 0.05  # the peak rate is the most bytes any such window moved
HALOCUT = str(Path(sys.executable).with_name("halocut"))

_SAMPLER = """import collections, json, select, sys, time
ports = sys.argv[3:]; step = float(sys.argv[1]); window = float(sys.argv[2])
files = {p: open(f"/sys/class/net/{p}/statistics/rx_bytes", "rb", buffering=0) for p in ports}
def read(p):
    files[p].seek(0); return int(files[p].read())
last = {p: read(p) for p in ports}; busy = {p: 0.0 for p in ports}; peak = {p: 0.0 for p in ports}
recent = {p: collections.deque() for p in ports}
print("ready", flush=True); stamp = time.perf_counter()
while not select.select([sys.stdin], [], [], step)[0]:
    now = time.perf_counter()
    for p in ports:
        value = read(p); moved = value - last[p]; last[p] = value
        if moved:
            busy[p] += now - stamp
        queue = recent[p]; queue.append((now, value))
        while now - queue[0][0] > window:
            queue.popleft()
        span = now - queue[0][0]
        if span >= 0.75 * window:
            peak[p] = max(peak[p], (value - queue[0][1]) * 8 / span)
    stamp = now
print(json.dumps({p: {"busy_s": busy[p], "peak_bps": peak[p]} for p in ports}), flush=True)
"""

_ECHO = """import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1); print("ready", flush=True); c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while (b := c.recv(64)):
    c.sendall(b)
"""

_PING = """import socket, statistics, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2]))); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
samples = []
for _ in range(int(sys.argv[3])):
    start = time.perf_counter(); c.sendall(b"x" * 64); got = 0
    while got < 64:
        got += len(c.recv(64))
    samples.append(time.perf_counter() - start)
print(statistics.median(samples[3:]))
"""


_RAY_MESSAGE = """import json, statistics, sys, time
import numpy as np, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
@ray.remote(num_cpus=0)
class End:
    def __init__(self):
        from halocut.runtime.cpu import join_cpu_cap
        join_cpu_cap()  # as an actor of the deployment does
    def make(self, n):
        return np.zeros(n, dtype=np.uint8)
    def take(self, x):
        return len(x)
    def echo(self, x):
        return x
pairs = json.loads(sys.argv[2]); size = int(sys.argv[3]); machines = json.loads(sys.argv[4])
ends = {m: End.options(resources={m: 0.001}).remote() for m in dict.fromkeys([*machines, *(m for p in pairs for m in p)])}
seconds = {}
small = np.zeros(size, dtype=np.uint8)
for m in machines:
    samples = []
    for _ in range(9):
        start = time.perf_counter(); ray.get(ends[m].take.remote(small)); samples.append(time.perf_counter() - start)
    seconds[m] = statistics.median(samples[2:])
from ray.dag import InputNode
with InputNode() as given:  # a chain of CHAIN calls, as the plain DAG API submits a request's parts
    node = given
    for _ in range(20):
        node = ends[machines[0]].echo.bind(node)
samples = []
for _ in range(7):
    start = time.perf_counter(); ref = node.execute(small); samples.append((time.perf_counter() - start) / 20)
    ray.get(ref)
seconds["(submit)"] = statistics.median(samples[2:])
for a, b in pairs + [[b, a] for a, b in pairs]:
    samples = []
    for _ in range(9):
        start = time.perf_counter(); ray.get(ends[b].take.remote(ends[a].make.remote(size)))
        samples.append(time.perf_counter() - start)
    seconds[a + ">" + b] = statistics.median(samples[2:])
print(json.dumps(seconds))
"""
MESSAGE_BYTES = 1000  # the message whose Ray transfer time stands for a link's per-message cost


def in_namespace(state: State, machine: str, argv: list[str], **options) -> subprocess.CompletedProcess:
    """Run ``argv`` in ``machine``'s namespace (not its cgroup) with the testbed's Ray environment."""
    namespace = state.machines[machine]["namespace"]
    return subprocess.run(["ip", "netns", "exec", namespace, *argv], env=ray_environment(), **options)


def requester(state: State) -> str:
    """The machine whose namespace holds the Ray head: drivers (run, profile) start there."""
    return state.processes[0]["machine"]


def halocut_in_head(state: State, argv: list[str], timeout_s: float | None = None) -> subprocess.CompletedProcess:
    """``halocut ARGV --address HEAD`` from the head's namespace; its stdout and stderr captured."""
    return in_namespace(state, requester(state), [HALOCUT, *argv, "--address", state.head], capture_output=True,
                        text=True, timeout=timeout_s)


def child_error(done: subprocess.CompletedProcess, what: str) -> HalocutError:
    """The one line a halocut command run in a namespace failed with, as this command's error."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    said = next((line.split("halocut: error: ", 1)[1] for line in reversed(lines) if "halocut: error: " in line),
                lines[-1] if lines else f"exit {done.returncode}")
    return HalocutError(f"{what}: {said}")


def round_trip_s(state: State, source: str, target: str, port: int = 5299, count: int = 23) -> float:
    """The median TCP round trip of a 64-byte message from ``source`` to ``target`` (its loopback address)."""
    address = state.machines[target]["address"]
    namespace = state.machines[target]["namespace"]
    server = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", _ECHO, address, str(port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        if server.stdout.readline().strip() != "ready":
            raise HalocutError(f"testbed '{state.name}': the echo server in {namespace} did not start")
        done = in_namespace(state, source, [sys.executable, "-c", _PING, address, str(port), str(count)],
                            capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise HalocutError(f"testbed '{state.name}': round trip {source} -> {target} failed: "
                               f"{(done.stderr.strip() or 'no output').splitlines()[-1]}")
        return float(done.stdout)
    finally:
        server.kill()
        server.wait()


def ray_message_s(state: State, pairs: list[tuple[str, str]], machines: list[str]) -> tuple[dict, dict]:
    """Seconds of Ray calls as the deployment makes them (the driver in the requester's namespace submits every
    call): what the driver takes to submit one call of a plain DAG ("(submit)", from a chain of 20 on the first
    machine's actor); per machine, a call carrying a MESSAGE_BYTES array to an actor there, less that submission
    (what running a part there costs beyond its compute); per pair, both ways, that array made by an actor on one machine and taken by an actor on
    the other (a small object returns to its owner, the driver, and goes on from there)."""
    done = in_namespace(state, requester(state), [sys.executable, "-c", _RAY_MESSAGE, state.head,
                                                  json.dumps([list(p) for p in pairs]), str(MESSAGE_BYTES),
                                                  json.dumps(machines)],
                        capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise HalocutError(f"testbed '{state.name}': timing Ray messages failed: "
                           f"{(done.stderr.strip() or 'no output').splitlines()[-1]}")
    seconds = json.loads(done.stdout.strip().splitlines()[-1])
    submit = seconds.pop("(submit)")
    return ({key: max(0.0, value - submit) for key, value in seconds.items() if ">" not in key} | {"(submit)": submit},
            {tuple(key.split(">")): value for key, value in seconds.items() if ">" in key})


# --- traffic per link during a run


@dataclass(frozen=True)
class _Direction:
    link: str
    sender: str
    receiver: str
    namespace: str
    interface: str  # the sender's veth
    classid: str  # its htb class there
    port: str  # the veth's end in the hub
    rate_bps: float


def _directions(layout: Layout) -> list[_Direction]:
    """Every shaped direction of every link, with the class ids :func:`bed._shape` gave them (1:10 on)."""
    found = []
    for segment in layout.segments:
        for member in segment.members:
            own = [shaped for machine, shaped in segment.classes if machine == member.machine]
            for k, shaped in enumerate(own, start=10):
                found.append(_Direction(shaped.link, member.machine, shaped.peer,
                                        layout.machine(member.machine).namespace, member.interface, f"1:{k}",
                                        member.port, shaped.rate_bps))
    return found


_CLASS_SENT = re.compile(r"^class htb (\S+) .*?\n\s*Sent (\d+) bytes", re.MULTILINE)


def _class_bytes(directions: list[_Direction]) -> dict[tuple[str, str], int]:
    counts = {}
    for namespace, interface in dict.fromkeys((d.namespace, d.interface) for d in directions):
        done = subprocess.run(["tc", "-n", namespace, "-s", "class", "show", "dev", interface],
                              capture_output=True, text=True)  # iproute2 6.1 prints no JSON for htb classes
        for handle, sent in _CLASS_SENT.findall(done.stdout if done.returncode == 0 else ""):
            counts[(interface + "@" + namespace, handle)] = int(sent)
    return {(d.sender, d.receiver): counts.get((d.interface + "@" + d.namespace, d.classid), 0) for d in directions}


class LinkMeter:
    """Bytes, busy seconds and achieved rate per link direction over a ``with`` block."""

    def __init__(self, state: State):
        self.state = state
        self.layout = plan_testbed(load_topology(state.topology), state.name)
        self.directions = _directions(self.layout)
        self.report: list[dict] = []

    def __enter__(self) -> "LinkMeter":
        ports = sorted({d.port for d in self.directions})
        self.sampler = subprocess.Popen(["ip", "netns", "exec", self.layout.hub, sys.executable, "-c", _SAMPLER,
                                         str(SAMPLE_S), str(PEAK_WINDOW_S), *ports], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        if self.sampler.stdout.readline().strip() != "ready":
            raise HalocutError(f"testbed '{self.state.name}': the link sampler in {self.layout.hub} did not start")
        self.before = _class_bytes(self.directions)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self.start
        after = _class_bytes(self.directions)
        try:
            busy = json.loads(self.sampler.communicate("stop\n", timeout=30)[0].strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            self.sampler.kill()
            self.sampler.wait()
            busy = {}
        for d in self.directions:
            sent = after[(d.sender, d.receiver)] - self.before[(d.sender, d.receiver)]
            sampled = busy.get(d.port, {})
            busy_s = sampled.get("busy_s", 0.0)
            self.report.append({"link": d.link, "from": d.sender, "to": d.receiver, "bytes": sent,
                                "busy_s": round(busy_s, 4), "run_s": round(seconds, 3),
                                "achieved_bps": sent * 8 / busy_s if busy_s > 0 and sent else None,
                                "peak_bps": sampled.get("peak_bps") or None, "configured_bps": d.rate_bps})


# --- profiles of every machine


def profile_testbed(state: State, model: str, output: str | Path, input_shape: str | None = None,
                    runtime: str = "torch", repeats: int = 5, force: bool = False, log=print) -> Path:
    """Profile ``model`` on every computing machine of the testbed (on its Ray node, in its CPU cgroup), measure
    every link's round trip, and write ``OUTPUT/topology.yaml``: the testbed's topology with each machine's
    figures replaced by its profile (memory kept from the topology) and its ``dispatch`` (a part's Ray call there,
    :func:`ray_message_s`); where the kernel has no netem, each link's
    latency by half its measured TCP round trip; each link's per-message overhead by what a small Ray message
    between actors on its two machines costs beyond that (:func:`ray_message_s`; a multi-hop message pays the
    overhead of every link it crosses, which overstates it: Ray sends it once). Returns the topology file's
    path."""
    if not state.ready:
        raise HalocutError(f"testbed '{state.name}' is not ready (its up did not finish); halocut testbed down "
                           f"--name {state.name}")
    output = Path(output)
    target = check_output(output / "topology.yaml", force)
    output.mkdir(parents=True, exist_ok=True)
    topology = load_topology(state.topology)
    data = read_yaml(state.topology)
    profiles = {}
    for device in topology.devices:
        if not device.computes:
            continue
        path = check_output(output / f"{device.name}.json", force)
        argv = ["profile", model, "--device", device.name, "--runtime", runtime, "--repeats", str(repeats), "-o",
                str(path.resolve()), "--force"]
        if input_shape:
            argv += ["--input-shape", input_shape]
        started = time.perf_counter()
        done = halocut_in_head(state, argv)
        if done.returncode:
            raise child_error(done, f"testbed '{state.name}': profiling {model} on {device.name}")
        profile = json.loads(path.read_text())
        profile["device_figures"]["memory_bytes"] = device.memory_bytes or profile["device_figures"]["memory_bytes"]
        profile["testbed"] = {"name": state.name, "machine": device.name, "cores": state.machines[device.name]["cores"]}
        write_json(path, profile, force=True)
        profiles[device.name] = path.name
        log(f"profiled {model} on {device.name} ({state.machines[device.name]['cores']:.3g} cores): "
            f"{time.perf_counter() - started:.0f} s")
    for entry in data["devices"]:
        if entry["name"] in profiles:
            for key in ("kind", "figures", "profile"):
                entry.pop(key, None)
            entry["profile"] = profiles[entry["name"]]
    latencies, overheads = {}, {}
    dispatch, messages = ray_message_s(state, [(link.a, link.b) for link in topology.links],
                                       sorted(profiles, key=lambda m: m != topology.requester.name))
    submit = dispatch.pop("(submit)")
    for entry in data["devices"]:
        if entry["name"] in dispatch:
            entry["dispatch"] = f"{dispatch[entry['name']] * 1e6:.0f}us"
        if entry["name"] == topology.requester.name:
            entry["submit"] = f"{submit * 1e6:.0f}us"
    for entry, link in zip(data.get("links", []), topology.links):
        rtt = round_trip_s(state, link.a, link.b)
        latency = rtt / 2 if not state.netem else link.latency_s
        # what a message costs beyond its bytes, latency and the two calls' dispatch
        ends = dispatch.get(link.a, 0.0) + dispatch.get(link.b, 0.0) + 2 * submit
        message = statistics.median([messages[(link.a, link.b)], messages[(link.b, link.a)]])
        overhead = max(0.0, message - ends - latency - MESSAGE_BYTES * 8 / link.bandwidth_bps)
        latencies[link.key], overheads[link.key] = latency, overhead
        entry["latency"] = f"{latency * 1e6:.0f}us"
        entry["overhead"] = f"{overhead * 1e6:.0f}us"
    data["name"] = f"{topology.name}-testbed"
    data["description"] = (f"testbed '{state.name}' of {state.topology} as measured by halocut testbed profile on "
                           f"{time.strftime('%Y-%m-%d %H:%M')}: {model}'s layers profiled on each machine's Ray node "
                           f"in its CPU cgroup; link latency "
                           f"{'from the topology (netem emulates it)' if state.netem else 'half the measured TCP round trip (no netem here)'}"
                           f"; the requester's submit: the driver's time per call of a plain Ray DAG; device "
                           f"dispatch: a Ray call with {MESSAGE_BYTES} bytes from the driver to an actor there, less "
                           f"the submit; link overhead: a {MESSAGE_BYTES}-byte Ray message between actors on its "
                           f"two machines less their dispatch, its bytes and latency")
    write_text(target, yaml.safe_dump(data, sort_keys=False, width=120), force=True)
    log(f"wrote {target} (profiles of {len(profiles)} machines; the driver submits a part in {submit * 1e3:.2f} ms; "
        f"dispatch per part "
        + ", ".join(f"{m} {v * 1e3:.2f} ms" for m, v in dispatch.items()) + "; link latency and per-message overhead "
        + ", ".join(f"{k} {v * 1e3:.2f} + {overheads[k] * 1e3:.2f} ms" for k, v in latencies.items()) + ")")
    return target
