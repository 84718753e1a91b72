"""Run a build on Ray: one actor per machine, a compiled graph per request, recovery when a machine fails.

Each machine of the topology that runs parts gets one actor (:class:`halocut.runtime.ray_actor.PartHost`),
placed by a custom resource named after the machine: on the real machine ``ray start --resources
'{"pi4-0": 1}'``; in the embedded cluster (no address) this machine offers one unit of every name.
The driver is the requester: it sends each first part its crop of the input and receives the
model's outputs. The graph of parts (:mod:`halocut.runtime.flow`) becomes a Ray DAG, compiled with
``experimental_compile`` so a request costs about a millisecond of dispatch; where compiling fails
the plain DAG API runs the same graph (and the log says so).

Recovery. When an actor dies mid-stream (``RayActorError``, or the channel errors a compiled graph
raises), the graph is torn down; each actor is pinged: one Ray restarted (``max_restarts``) gets its
parts again; one that is gone for good (restarts used up, machine lost) has its parts re-placed on the
remaining machines that can run them (the least loaded first). The graph is compiled again and every
request that was in flight is sent again, so none is lost. Each recovery is logged with its kind and
duration and kept in :attr:`Deployment.recoveries`. A machine that fails while its parts are hosted
(at start-up, or during a recovery) is recovered the same way; at most ``max_recoveries`` failures are
handled before the run gives up with one line. On the plain DAG API a part that receives from a dead
actor fails with a task error whose cause is that death: it is recovered, not reported as the part's.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import ray
from ray import exceptions as rex

from halocut.backends.manifest import inside
from halocut.ir.errors import HalocutError, one_line
from halocut.ir.files import read_bytes
from halocut.runtime.flow import Flow, Step, collect, entry_messages
from halocut.runtime.ray_actor import MAX_ARTIFACT_BYTES, PartHost, Staged

logger = logging.getLogger("halocut.runtime")

FAILURES = (rex.RayActorError, rex.RayChannelError, rex.GetTimeoutError, rex.ObjectLostError)
_RemoteHost = ray.remote(PartHost)


@dataclass(frozen=True)
class Recovery:
    """One recovery: ``restart`` (Ray restarted the actor) or ``replan`` (its parts moved to other machines)."""

    kind: str
    device: str
    seconds: float
    resent: int  # requests in flight, sent again
    detail: str

    def to_json(self) -> dict:
        return dict(self.__dict__)


def connect(devices: list[str], address: str | None = None) -> bool:
    """Join the Ray cluster at ``address`` or start an embedded one offering a resource per device.

    Returns whether this call started Ray (the caller then shuts it down). Every device needs one
    unit of its resource somewhere in the cluster.
    """
    started = False
    if not ray.is_initialized():
        _quiet_auth_notice()
        _route_raylet_errors()
        options = {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False}
        try:
            if address:
                _reachable(address)
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=os.cpu_count(), resources={d: 1 for d in devices}, **options)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise HalocutError(f"cannot {'join the Ray cluster at ' + address if address else 'start Ray'}: "
                               f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
        started = True
    offered = ray.cluster_resources()
    missing = [d for d in devices if offered.get(d, 0) < 1]
    if missing:
        if started:
            ray.shutdown()
        where = f"the Ray cluster at {address}" if address else "this Ray session"
        raise HalocutError(f"no machine in {where} offers the resource '{missing[0]}' (on that machine: ray start "
                           f"--address <head>:6379 --resources '{{\"{missing[0]}\": 1}}')")
    return started


class _AuthNotice(logging.Filter):
    """Drops Ray's notice that it turned token authentication on (stderr carries halocut's own lines; issue 18,
    item 14); its warning that authentication is off still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Token authentication is enabled")


def _quiet_auth_notice() -> None:
    source = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _AuthNotice) for f in source.filters):
        source.addFilter(_AuthNotice())


def _route_raylet_errors() -> None:
    """Send the errors raylets publish to the driver (\"A worker died or was killed ...\") to halocut's log at INFO.

    Ray's driver prints them on stdout, where ``run --json`` writes its one JSON object (issue 18, item 14);
    the recovery warning halocut logs says what happened. Ray offers no setting for it, so its printer
    (``ray._private.worker.print_to_stdstream``, looked up by the listening thread at each message) is
    wrapped; every other stream Ray prints passes unchanged."""
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "halocut_routed", False):
        return

    def route(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            return printer(data, ignore_prefix)
        for message in data.get("lines", []):
            logger.info("ray: %s", str(message).strip().splitlines()[0] if str(message).strip() else message)

    route.halocut_routed = True
    worker.print_to_stdstream = route


CONNECT_TIMEOUT_S = 10.0  # how long joining a cluster may wait for its head to answer


def _reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, within ``timeout_s``, a cluster address nothing answers at (Ray itself retries for minutes).

    ``auto`` and ``ray://`` client addresses are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise HalocutError(f"--address {address}: not HOST:PORT (the head's GCS address, e.g. 10.0.0.2:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise HalocutError(f"cannot join the Ray cluster at {address}: {error.strerror or 'no answer'} (waited at "
                           f"most {timeout_s:.0f} s)") from None


class Deployment:
    """The actors of one build and the graph that runs a request through them.

    Starting actors takes seconds, so the example is not run::

        flow = flow_from_manifest(load_manifest("build/r18"))
        connect(flow.devices())
        with Deployment(flow, "build/r18", threads=1) as deployment:
            answers, latencies = deployment.stream([x0, x1, x2], window=2)
    """

    def __init__(self, flow: Flow, build_dir: str | Path, threads: int | None = 0, compiled: bool = True,
                 max_inflight: int = 8, restart_timeout_s: float = 60.0, request_timeout_s: float = 120.0,
                 max_restarts: int = 2, max_recoveries: int = 5, authority: dict | None = None,
                 staged: str | Path | None = None):
        """The actors are created by start(). ``threads`` per actor: 0 all of its machine's cores. ``authority``
        (:meth:`halocut.backends.manifest.Build.authority`): what each actor checks the signature with.
        ``staged``: where every machine holds a copy of the build already; its actors read their artifacts
        there (sha256 checked as ever) and nothing is sent, so hosting a large build over a slow link does not
        outlast ``restart_timeout_s``."""
        self.flow, self.build = flow, Path(build_dir)
        self.staged = None if staged is None else str(staged)
        self.authority = authority
        self.threads, self.compiled = threads, compiled
        self.max_inflight, self.max_restarts, self.max_recoveries = max_inflight, max_restarts, max_recoveries
        self.restart_timeout_s, self.request_timeout_s = restart_timeout_s, request_timeout_s
        self.placement = {step.name: step.device for step in flow.steps}
        self.actors: dict = {}
        self.pids: dict[str, int] = {}
        self.backends: dict[str, str] = {}
        self.recoveries: list[Recovery] = []
        self._failures = 0  # failures handled, those met while hosting parts again included
        self.graph = "none"
        self._blobs: dict[str, ray.ObjectRef] = {}
        self._moved: dict[str, list[str]] = {}
        self._dag = self._compiled_dag = None

    def start(self) -> None:
        """Create the actors, load every part (sha256 checked by its actor), and compile the graph."""
        for device in self.flow.devices():
            self.actors[device] = _RemoteHost.options(
                resources={device: 1}, num_cpus=0, max_restarts=self.max_restarts, max_task_retries=0,
            ).remote(device, self.threads)
        try:
            self._bring_up()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Tear the graph down and end the actors (their resources become free again)."""
        self._teardown()
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        self.actors.clear()
        self._blobs.clear()

    def __enter__(self) -> "Deployment":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stream(self, inputs: list[np.ndarray], window: int = 1,
               on_answer: Callable[[int], None] | None = None) -> tuple[list[dict], list[float]]:
        """Send every input, at most ``window`` in flight; returns the answers (output name -> array) and latencies.

        A request's latency runs from its first sending to its answer, a recovery included.
        ``on_answer(i)`` is called after answer ``i`` arrives.
        """
        window = max(1, min(window, self.max_inflight))
        answers: list[dict | None] = [None] * len(inputs)
        latencies = [0.0] * len(inputs)
        sent_at: dict[int, float] = {}
        pending: collections.deque = collections.deque()
        following = 0
        while pending or following < len(inputs):
            try:
                while following < len(inputs) and len(pending) < window:
                    sent_at.setdefault(following, time.perf_counter())
                    pending.append((following, self._submit(inputs[following])))
                    following += 1
                index, ref = pending[0]
                answers[index] = self._fetch(ref)
                latencies[index] = time.perf_counter() - sent_at[index]
                pending.popleft()
            except FAILURES as error:
                following = pending[0][0] if pending else following
                self._recover(error, len(pending))
                pending.clear()
                continue
            if on_answer is not None:
                on_answer(index)
        return answers, latencies

    def statistics(self) -> dict[str, dict]:
        """Per part since the last :meth:`reset`: runs, compute seconds, copy seconds, bytes sent off its machine."""
        merged = {}
        for result in ray.get([a.statistics.remote() for a in self.actors.values()], timeout=self.request_timeout_s):
            for part, record in result["parts"].items():
                merged[part] = {**record, "device": result["device"]}
        return merged

    def reset(self) -> None:
        ray.get([a.reset.remote() for a in self.actors.values()], timeout=self.request_timeout_s)

    def pid(self, device: str) -> int:
        """The process id of a device's actor (tests kill it)."""
        return ray.get(self.actors[device].ping.remote(), timeout=self.request_timeout_s)["pid"]

    def _submit(self, x: np.ndarray):
        messages = entry_messages(self.flow, x)
        if self._compiled_dag is not None:
            return self._compiled_dag.execute(*messages)
        with warnings.catch_warnings():  # the plain DAG API is deprecated in favour of compiled graphs
            warnings.simplefilter("ignore")
            return self._dag.execute(*messages)

    def _fetch(self, ref) -> dict[str, np.ndarray]:
        try:
            values = ray.get(ref, timeout=self.request_timeout_s)
        except rex.RayTaskError as error:
            raise _user_error(error) from None
        # collect copies: a compiled graph's arrays live in its channel buffers, which wait until they are released
        answer = collect(self.flow, values)
        del values
        return answer

    def _bring_up(self) -> None:
        """Host every part and compile the graph. A machine that fails meanwhile (at start-up, or while a
        recovery hosts parts again) is recovered as one failing mid-stream is."""
        try:
            self._learn_pids()
            self._host()
            self._build_graph()
            if self.graph == "plain" and self.compiled and self._census() != ([], {}):
                # the graph did not compile because an actor died meanwhile: recover, then compile again
                raise rex.RayActorError()
        except FAILURES as error:  # ActorUnavailableError (restarting) is one
            self._recover(error, 0)

    def _census(self) -> tuple[list[str], dict[str, int]]:
        """The machines whose actors are gone for good, and those Ray restarted (device -> the new process id)."""
        lost, restarted = [], {}
        for device, actor in list(self.actors.items()):
            info = _ping(actor, self.restart_timeout_s)
            if info is None:
                lost.append(device)
            elif device in self.pids and info["pid"] != self.pids[device]:
                restarted[device] = info["pid"]
        return lost, restarted

    def _learn_pids(self) -> None:
        """The process id of every actor not known yet, so that one restarted while its parts are sent is seen."""
        unknown = {d: a.ping.remote() for d, a in self.actors.items() if d not in self.pids}
        self.pids.update({d: info["pid"] for d, info in _get(unknown, self.restart_timeout_s).items()})

    def _host(self) -> None:
        """Send every actor the parts placed on it that it does not hold yet (all of them after a restart)."""
        by_device: dict[str, list[Step]] = {d: [] for d in self.actors}
        for step in self.flow.steps:
            by_device[self.placement[step.name]].append(step)
        chosen = _get({d: self.actors[d].choose.remote(steps) for d, steps in by_device.items()}, self.restart_timeout_s)
        for path in {p for paths in chosen.values() for p in paths.values()} - set(self._blobs):
            source = inside(self.build, path, self.build / "manifest.json")  # a path leaving the build is refused
            self._blobs[path] = Staged(self.staged, path) if self.staged is not None else \
                ray.put(read_bytes(source, MAX_ARTIFACT_BYTES))
        loaded = _get({d: self.actors[d].host.remote(steps, {p: self._blobs[p] for p in chosen[d].values()},
                                                       self.placement, self.authority)
                       for d, steps in by_device.items()},
                      self.restart_timeout_s)
        for device, backends in loaded.items():
            self.backends.update(backends)

    def _build_graph(self) -> None:
        from ray.dag import InputNode, MultiOutputNode

        with InputNode() as request:
            count = len(self.flow.entry)
            # the plain API hands a lone argument over as itself, a compiled graph as args[0]
            entry = [request] if count == 1 and not self.compiled else [request[i] for i in range(count)]
            nodes: dict[str | None, list] = {None: entry}
            for step in self.flow.steps:
                actor = self.actors[self.placement[step.name]]
                args = [nodes[r.from_part][r.message] for r in step.receives]
                count = len(step.sends)
                method = actor.run if count == 1 else actor.run.options(num_returns=count)
                node = method.bind(step.name, *args)
                nodes[step.name] = [node] if count == 1 else [node[i] for i in range(count)]
            self._dag = MultiOutputNode([nodes[final.part][final.message] for final in self.flow.finals])
        self._compiled_dag = None
        if not self.compiled:
            self.graph = "plain"
            return
        try:
            self._compiled_dag = self._dag.experimental_compile(_max_inflight_executions=self.max_inflight)
            self.graph = "compiled"
        except Exception as error:  # noqa: BLE001 - any graph a compiled graph cannot express runs on the plain API
            logger.warning("compiled graph unavailable (%s); running on the plain Ray DAG API, whose dispatch costs "
                           "milliseconds more per part", str(error).splitlines()[0] if str(error) else error)
            self.graph = "plain"

    def _teardown(self) -> None:
        if self._compiled_dag is None:
            return
        ray_logger = logging.getLogger("ray.dag.compiled_dag_node")
        level = ray_logger.level
        ray_logger.setLevel(logging.CRITICAL)  # it logs a traceback for every actor that died; recovery says it once
        try:
            self._compiled_dag.teardown()
        except Exception as error:  # noqa: BLE001 - a graph with a dead actor may fail to tear down cleanly
            logger.info("teardown of the compiled graph: %s", error)
        finally:
            ray_logger.setLevel(level)
            self._compiled_dag = None

    def _recover(self, error: Exception, in_flight: int) -> None:
        """Restart or replan after ``error``, host the parts again and rebuild the graph; a failure meanwhile is
        recovered in turn, up to ``max_recoveries`` failures in all."""
        if self._failures >= self.max_recoveries:
            raise HalocutError(f"giving up after {self._failures} recoveries; last failure: "
                               f"{one_line(error, first=True)}") from None
        self._failures += 1
        start = time.perf_counter()
        self._teardown()
        lost, restarted = self._census()
        self.pids.update(restarted)
        for device in lost:
            self._replan(device)
        self._bring_up()
        seconds = time.perf_counter() - start
        for kind, devices in (("restart", restarted), ("replan", lost)):
            for device in devices:
                detail = ("Ray restarted the actor; its parts were loaded again" if kind == "restart" else
                          "the actor is gone; its parts now run on " + ", ".join(sorted(
                              {self.placement[p] for p in self._moved.get(device, [])})))
                self.recoveries.append(Recovery(kind, device, seconds, in_flight, detail))
                logger.warning("%s actor '%s' after %s: %s; recovery took %.2f s, %d request(s) in flight sent again",
                               "restarted" if kind == "restart" else "replanned without", device,
                               type(error).__name__, detail, seconds, in_flight)
        if not lost and not restarted:
            self.recoveries.append(Recovery("retry", "-", seconds, in_flight, one_line(error, first=True)))
            logger.warning("graph failed (%s) with every actor alive; rebuilt it in %.2f s, %d request(s) sent again",
                           one_line(error, first=True), seconds, in_flight)

    def _parts_on(self, device: str) -> set[str]:
        return {p for p, d in self.placement.items() if d == device}

    def _replan(self, device: str) -> None:
        """Move a lost machine's parts to the remaining machines that can run them, the least loaded first."""
        actor = self.actors.pop(device)
        ray.kill(actor, no_restart=True)
        self.pids.pop(device, None)
        if not self.actors:
            raise HalocutError(f"machine '{device}' is lost and no other machine is left")
        moved = []
        for step in self.flow.steps:
            if self.placement[step.name] != device:
                continue
            load = {d: sum(s.predicted_s for s in self.flow.steps if self.placement[s.name] == d) for d in self.actors}
            for candidate in sorted(self.actors, key=load.get):
                try:
                    ray.get(self.actors[candidate].choose.remote([step]), timeout=self.restart_timeout_s)
                except rex.RayTaskError:
                    continue
                self.placement[step.name] = candidate
                moved.append(step.name)
                break
            else:
                raise HalocutError(f"machine '{device}' is lost and no remaining machine can run its part "
                                   f"'{step.name}' ({', '.join(a['target'] for a in step.artifacts)}); recompile "
                                   f"for the remaining machines")
        self._moved[device] = moved


def _ping(actor, timeout_s: float) -> dict | None:
    """The actor's ping, waiting while Ray restarts it; None when it is dead for good or does not answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get(actor.ping.remote(), timeout=max(0.1, deadline - time.monotonic()))
        except rex.ActorUnavailableError:  # restarting: ask again
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)
        except (rex.ActorDiedError, rex.GetTimeoutError, rex.RayActorError):
            return None


def _get(refs: dict, timeout_s: float) -> dict:
    """``ray.get`` of a dict of references; an actor's HalocutError comes back as one line."""
    try:
        values = ray.get(list(refs.values()), timeout=timeout_s)
    except rex.RayTaskError as error:
        raise _user_error(error) from None
    return dict(zip(refs, values))


def _user_error(error: rex.RayTaskError) -> Exception:
    """A part's own failure as one line; a task that failed because an actor it depends on died is that death
    (on the plain DAG API a part receiving from a dead actor fails so), which the caller recovers from."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, FAILURES):
        return cause
    if isinstance(cause, HalocutError):
        return HalocutError(str(cause))
    return HalocutError(f"a part failed on its actor: {one_line(cause or error, first=True)}")
