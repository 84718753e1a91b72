"""The data flow of a build, read from its manifest: which part sends which piece of which output to whom.

Mechanism shared by the Ray runtime (each actor crops what it sends and assembles what it receives)
and the in-process executor :func:`run_local`. A *message* is one piece of one part's output on its
way to one input of another part (or to the requester): the producer crops it (a tile's halo
region, an fc cluster's input features), the consumer places it into the input it assembles.
Nothing is sent twice and nothing travels that the consumer does not read.

>>> import numpy as np
>>> send = Send(output=0, rows=(1, 3), cols=None, features=None, to_device="b", to_part="s1", to_input=0)
>>> crop([np.arange(16.0).reshape(1, 1, 4, 4)], send).shape
(1, 1, 2, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from halocut.ir.errors import HalocutError
from halocut.ir.names import parse_part_name

Span = tuple[int, int]
Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class Send:
    """One message: output ``output`` (its index) of a part, cropped, to one input of a part (None: the requester)."""

    output: int
    rows: Span | None  # crop, in the producer's output coordinates
    cols: Span | None
    features: Span | None  # last-dimension slice (fc clusters by input features)
    to_device: str
    to_part: str | None
    to_input: int  # index of the consumer's input (or of the model's outputs for the requester)


@dataclass(frozen=True)
class Receive:
    """One message into input ``input``: placed at ``rows``, ``cols`` of it, or the whole input when None."""

    input: int
    rows: Span | None
    cols: Span | None
    from_part: str | None  # None: the requester (the model's input)
    message: int  # index into the producer's sends (or the requester's)


@dataclass(frozen=True)
class Step:
    """A part of the build: where it runs, its artifacts, what it receives and sends, its predicted seconds."""

    name: str
    device: str
    inputs: tuple[tuple[str, tuple[int, ...], str], ...]  # name, shape, dtype
    outputs: tuple[str, ...]
    receives: tuple[Receive, ...]
    sends: tuple[Send, ...]
    artifacts: tuple[dict, ...]  # the manifest's artifact entries, in preference order
    predicted_s: float


@dataclass(frozen=True)
class Final:
    """A model output the requester receives from ``part`` (its send ``message``), placed at rows, cols of it."""

    part: str
    message: int
    name: str
    rows: Span | None  # None: the whole output
    cols: Span | None
    shape: tuple[int, ...]  # of the whole output


@dataclass(frozen=True)
class Flow:
    """Every step in an order where producers come first, what the requester sends, what comes back."""

    model: str
    input_name: str
    input_shape: tuple[int, ...]
    requester: str
    steps: tuple[Step, ...]
    entry: tuple[Send, ...]  # crops of the model's input the requester sends
    finals: tuple[Final, ...]  # the model's outputs, or the pieces of them that tiles make
    predicted_latency_s: float
    predicted_throughput_ips: float

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def devices(self) -> list[str]:
        """Devices that run parts, in the order they first appear."""
        return list(dict.fromkeys(s.device for s in self.steps))


def flow_from_manifest(manifest: dict) -> Flow:
    """The flow of a (validated) manifest; a manifest whose sources do not tile an input is refused."""
    entries = {p["name"]: (device, p) for device, e in manifest["devices"].items() for p in e["parts"]}
    requester = next((d for d, e in manifest["devices"].items() if e["role"] == "requester"),
                     manifest["topology"]["devices"][0]["name"])
    origins = _tile_origins(manifest["plan"])
    sends: dict[str | None, list[Send]] = {name: [] for name in entries}
    sends[None] = []
    receives: dict[str, list[Receive]] = {name: [] for name in entries}
    model_input = {manifest["model"]["input"]["name"]: tuple(manifest["model"]["input"]["shape"])}
    for name, (device, part) in entries.items():
        for index, tensor in enumerate(part["inputs"]):
            _connect(name, device, index, tensor, entries, origins, sends, receives, model_input)
    finals = []
    for name, (_, part) in entries.items():
        for index, output in enumerate(part["outputs"]):
            if any(t.get("part") is None and t["device"] == requester for t in output["to"]):
                sends[name].append(Send(index, None, None, None, requester, None, len(finals)))
                finals.append(_final(name, len(sends[name]) - 1, output, origins))
    steps = [Step(name, device, tuple((t["name"], tuple(t["shape"]), t["dtype"]) for t in part["inputs"]),
                  tuple(o["name"] for o in part["outputs"]), tuple(receives[name]), tuple(sends[name]),
                  tuple(part["artifacts"]), float(part["predicted_s"])) for name, (device, part) in entries.items()]
    timeline = manifest["timeline"]
    return Flow(manifest["model"]["name"], manifest["model"]["input"]["name"], tuple(manifest["model"]["input"]["shape"]), requester,
                tuple(_ordered(steps)), tuple(sends[None]), tuple(finals), float(timeline["latency_s"]),
                float(timeline["throughput_ips"]))


def _connect(name, device, index, tensor, entries, origins, sends, receives, input_shape) -> None:
    """Add the messages that make input ``index`` of part ``name``: producers crop, the consumer places."""
    shape = tuple(tensor["shape"])
    sources = tensor["from"]
    regions = [s["region"] for s in sources if s.get("region") is not None]
    whole = len(sources) == 1 and (not regions or _size(regions[0]) == shape[-2:])
    if not whole and len(regions) != len(sources):
        raise HalocutError(f"manifest: input '{tensor['name']}' of part '{name}' has {len(sources)} sources "
                           f"but not a region for each to place it")
    top = min((r["rows"][0] for r in regions), default=0)
    left = min((r["cols"][0] for r in regions), default=0)
    covered = 0
    for source in sources:
        producer = source["part"]
        outputs = _outputs(name, source, entries, input_shape)
        region = source.get("region")
        rows = cols = place_rows = place_cols = None
        if region is not None:
            origin = origins[producer][0] if producer in origins else (0, 0)
            rows = (region["rows"][0] - origin[0], region["rows"][1] - origin[0])
            cols = (region["cols"][0] - origin[1], region["cols"][1] - origin[1])
            if (rows, cols) == ((0, outputs[source["output"]][-2]), (0, outputs[source["output"]][-1])):
                rows = cols = None  # the whole output
        if not whole:
            place_rows = (region["rows"][0] - top, region["rows"][1] - top)
            place_cols = (region["cols"][0] - left, region["cols"][1] - left)
            covered += _size(region)[0] * _size(region)[1]
        features = tuple(source["features"]) if source.get("features") else None
        target = sends[producer]
        target.append(Send(list(outputs).index(source["output"]), rows, cols, features, device, name, index))
        receives[name].append(Receive(index, place_rows, place_cols, producer, len(target) - 1))
    if not whole and covered != shape[-2] * shape[-1]:
        raise HalocutError(f"manifest: the sources of input '{tensor['name']}' of part '{name}' cover {covered} "
                           f"of its {shape[-2] * shape[-1]} positions")


def _outputs(name: str, source: dict, entries: dict, input_shape: dict) -> dict[str, tuple[int, ...]]:
    """The outputs (name -> shape) of the part a source names; the requester's is the model's input."""
    producer = source["part"]
    if producer is None:
        outputs = input_shape
    elif producer not in entries:
        raise HalocutError(f"manifest: part '{name}' reads from unknown part '{producer}'")
    else:
        outputs = {o["name"]: tuple(o["shape"]) for o in entries[producer][1]["outputs"]}
    if source["output"] not in outputs:
        raise HalocutError(f"manifest: part '{name}' reads '{source['output']}', which "
                           f"{'the requester' if producer is None else repr(producer)} does not send")
    return outputs


def _final(part: str, message: int, output: dict, origins: dict) -> Final:
    """A model output from a part; a tile's output is one piece of it (its region of the stage's output)."""
    shape = tuple(output["shape"])
    if part not in origins:
        return Final(part, message, output["name"], None, None, shape)
    (top, left), (bottom, right) = origins[part]
    return Final(part, message, output["name"], (top, top + shape[-2]), (left, left + shape[-1]),
                 (*shape[:-2], bottom, right))


def _tile_origins(plan: dict) -> dict[str, tuple[int, int]]:
    """Per tile part: the top-left corner of its region of the stage's output, and that output's height, width."""
    from halocut.ir.names import part_name

    origins = {}
    for index, stage in enumerate(plan["stages"]):
        tiles = stage.get("tiles") or []
        extent = (max((t["rows"][1] for t in tiles), default=0), max((t["cols"][1] for t in tiles), default=0))
        for t, tile in enumerate(tiles):
            for h in range(len(tile["devices"])):
                origins[part_name(index, t, h)] = ((tile["rows"][0], tile["cols"][0]), extent)
    return origins


def _ordered(steps: list[Step]) -> list[Step]:
    """Plan order, hops of one stage side by side (all first hops, then all second hops); producers first."""
    def key(step: Step):
        part = parse_part_name(step.name)
        return part.stage, part.hop, part.merge, part.tile if part.tile is not None else part.cluster or 0
    ordered = sorted(steps, key=key)
    seen: set[str] = set()
    for step in ordered:
        for receive in step.receives:
            if receive.from_part is not None and receive.from_part not in seen:
                raise HalocutError(f"manifest: part '{step.name}' reads from '{receive.from_part}', "
                                   f"which runs after it")
        seen.add(step.name)
    return ordered


def _size(region: dict) -> tuple[int, int]:
    return region["rows"][1] - region["rows"][0], region["cols"][1] - region["cols"][0]


def crop(outputs: list[np.ndarray], send: Send) -> np.ndarray:
    """The piece of an output a message carries (a contiguous copy when it is a crop)."""
    value = outputs[send.output]
    if send.features is not None:
        value = value[..., send.features[0]:send.features[1]]
    if send.rows is not None or send.cols is not None:
        value = value[..., _slice(send.rows), _slice(send.cols)]
    return np.ascontiguousarray(value)


def _slice(span: Span | None) -> slice:
    return slice(None) if span is None else slice(*span)


def assemble(step: Step, messages: list[np.ndarray]) -> list[np.ndarray]:
    """The inputs of a step from its messages (in ``step.receives`` order): whole, or pieces placed in place."""
    inputs: list[np.ndarray | None] = [None] * len(step.inputs)
    for receive, message in zip(step.receives, messages, strict=True):
        name, shape, dtype = step.inputs[receive.input]
        if receive.rows is None and receive.cols is None:
            inputs[receive.input] = message
            continue
        if inputs[receive.input] is None:
            inputs[receive.input] = np.empty(shape, dtype=message.dtype)
        target = inputs[receive.input][..., _slice(receive.rows), _slice(receive.cols)]
        if target.shape != message.shape:
            raise HalocutError(f"part '{step.name}': a piece of input '{name}' has shape {message.shape}, "
                               f"its place {target.shape}")
        target[...] = message
    for (name, shape, _), value in zip(step.inputs, inputs):
        if value is None or tuple(value.shape) != shape:
            raise HalocutError(f"part '{step.name}': input '{name}' is {None if value is None else value.shape}, "
                               f"expected {shape}")
    return inputs


def entry_messages(flow: Flow, x: np.ndarray) -> list[np.ndarray]:
    """What the requester sends for one request: its crops of the model's input."""
    if tuple(x.shape) != flow.input_shape:
        raise HalocutError(f"input of shape {tuple(x.shape)}; the build is for {flow.input_shape}")
    return [crop([x], send) for send in flow.entry]


def run_local(flow: Flow, runners: dict[str, Runner], x: np.ndarray) -> dict[str, np.ndarray]:
    """Run every step here, in order, through the same messages the distributed runtime sends.

    Returns the model's outputs by name. ``runners`` maps part names to callables (a backend's ``load``).
    """
    sent: dict[str | None, list[np.ndarray]] = {None: entry_messages(flow, x)}
    for step in flow.steps:
        inputs = assemble(step, [sent[r.from_part][r.message] for r in step.receives])
        outputs = runners[step.name](inputs)
        sent[step.name] = [crop(outputs, send) for send in step.sends]
    return collect(flow, [sent[final.part][final.message] for final in flow.finals])


def collect(flow: Flow, values: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs by name from what the requester received (``flow.finals`` order): tiles stitched."""
    outputs: dict[str, np.ndarray] = {}
    for final, value in zip(flow.finals, values, strict=True):
        if final.rows is None:
            outputs[final.name] = np.array(value, copy=True)
            continue
        if final.name not in outputs:
            outputs[final.name] = np.empty(final.shape, dtype=value.dtype)
        outputs[final.name][..., final.rows[0]:final.rows[1], final.cols[0]:final.cols[1]] = value
    return outputs
