"""`halocut bench`: every runnable artifact timed against its stage unsplit; exact FLOPs; the cost model reads it."""

import json

import pytest
import yaml

from halocut.backends import qemu
from halocut.backends.manifest import load_manifest
from halocut.compiler.cli import main
from halocut.compiler.commands import bench_build
from halocut.compiler.driver import CompileOptions, compile_model
from halocut.compiler.prepare import prepare_model
from halocut.ir.errors import HalocutError
from halocut.ir.layers import LayerProp
from halocut.ir.plan import Cluster, Hop, Plan, Stage, Tile
from halocut.ir.regions import Region
from halocut.runtime.bench import rebuild, write_bench
from halocut.runtime.simulate import simulate
from halocut.targets.topology import load_topology

SHAPE = (1, 3, 32, 32)
FAST = {"repeats": 3, "warmup": 1, "threads": 1, "progress": False}


def lenet_plan(edges, single_device, requester_merge=True) -> Plan:
    """Three row tiles of lenet5's convolutions (one a two-hop chain), a single stage, a hybrid fc stage."""
    a, b = edges
    rows = [(0, 1), (1, 3), (3, 5)]
    chains = [(Hop(a),), (Hop(b, "_2"), Hop(a)), (Hop(b),)]
    tiles = tuple(Tile(Region(r, (0, 5)), chain) for r, chain in zip(rows, chains))
    return Plan("lenet5", SHAPE, (
        Stage("spatial", ("_0", "_1", "_2", "_3", "_4", "_5"), tiles=tiles),
        Stage("single", ("_6", "_7", "_8"), device=single_device),
        Stage("fc", ("_9", "_10", "_11"), mode="hybrid", clusters=(Cluster((0, 40), a), Cluster((40, 84), b)))))


def make_build(tmp, devices, plan, backends):
    """Compile lenet5 for a topology of ``devices`` (name -> catalog kind; the first is the requester)."""
    names = list(devices)
    (tmp / "t.yaml").write_text(yaml.safe_dump({
        "name": "bench", "devices": [{"name": n, "role": "requester" if i == 0 else "device", "kind": k}
                                     for i, (n, k) in enumerate(devices.items())],
        "links": [{"between": [names[0], n], "bandwidth": "100Mbps", "latency": "1ms"} for n in names[1:]]}))
    plan.save(tmp / "plan.json")
    compile_model(CompileOptions("lenet5", tmp / "t.yaml", tmp / "build", tmp / "plan.json", input_shape=SHAPE,
                                 backends=backends, progress=False))
    return tmp / "build"


@pytest.fixture(scope="module")
def ort_build(tmp_path_factory):
    """Raspberry Pis given ONNX and torch programs: every part runs here with onnxruntime and torch."""
    tmp = tmp_path_factory.mktemp("ort")
    devices = {"camera": "rpi3b", "pi-0": "rpi4", "pi-1": "rpi4"}
    build = make_build(tmp, devices, lenet_plan(("pi-0", "pi-1"), "pi-0"), ("onnx", "torch"))
    return build, bench_build(build, **FAST)


@pytest.fixture(scope="module")
def tvm_build(tmp_path_factory):
    """x86 edge servers (TVM x86 and torch) and a Pi (TVM aarch64, which runs here only emulated)."""
    tmp = tmp_path_factory.mktemp("tvm")
    devices = {"camera": "desktop-i7", "pi": "rpi4", "edge-0": "desktop-i7", "edge-1": "desktop-i7"}
    return make_build(tmp, devices, lenet_plan(("edge-0", "edge-1"), "pi"), None)


def counted_flops(module, inputs):
    """FLOPs of a part's own module, annotated on its own: independent of the bench's region arithmetic."""
    LayerProp(module).propagate(*inputs)
    return sum(n.meta["layer"].flops for n in module.graph.nodes if "layer" in n.meta)


def test_every_part_is_timed_and_its_flops_are_exact(ort_build):
    build, result = ort_build
    assert result["format"] == "halocut-bench/1" and result["model"] == "lenet5"
    assert {"device_figures", "layers", "host", "parts", "stages", "runtime"} <= set(result)
    names = [p["name"] for p in result["parts"]]
    assert names == ["s0_t0_h0", "s0_t1_h0", "s0_t1_h1", "s0_t2_h0", "s1", "s2_c0", "s2_c1", "s2_merge"]
    manifest = load_manifest(build)
    shape = tuple(manifest["model"]["input"]["shape"])
    rebuilt = rebuild(manifest, build, prepare_model(manifest["model"]["name"], shape).graph)
    for part in result["parts"]:
        assert set(part["runs"]) == {"onnxruntime", "torch"} and part["note"] is None
        for run in part["runs"].values():
            assert 0 < run["median_s"] <= run["p90_s"] and run["repeats"] == 3
            assert run["gflops"] == pytest.approx(part["flops"] / run["median_s"] / 1e9, rel=1e-12)
        module, inputs = rebuilt.parts[part["name"]]
        assert part["flops"] == pytest.approx(counted_flops(module, inputs), rel=1e-12), part["name"]
    graph = prepare_model("lenet5", SHAPE).graph
    layer_flops = {n.name: n.meta["layer"].flops for n in graph.graph.nodes if "layer" in n.meta}
    spatial, single, fc = result["stages"]
    assert single["flops"] == single["split_flops"] == layer_flops["_7"]
    assert fc["flops"] == fc["split_flops"] == layer_flops["_9"] + layer_flops["_11"]
    assert spatial["flops"] == sum(layer_flops[f"_{i}"] for i in range(6)) < spatial["split_flops"]  # halos


def test_ratio_is_the_parts_sum_over_the_stage_run_unsplit(ort_build):
    _, result = ort_build
    medians = {p["name"]: {r: run["median_s"] for r, run in p["runs"].items()} for p in result["parts"]}
    for stage in result["stages"]:
        assert set(stage["unsplit"]) == {"onnxruntime", "torch"} and not any(stage["missing"].values())
        for runtime, unsplit in stage["unsplit"].items():
            split = sum(medians[name][runtime] for name in stage["parts"])
            assert stage["split_s"][runtime] == pytest.approx(split, rel=1e-12)
            assert stage["ratio"][runtime] == pytest.approx(split / unsplit["median_s"], rel=1e-12)
            assert unsplit["gflops"] == pytest.approx(stage["flops"] / unsplit["median_s"] / 1e9, rel=1e-12)
    single = result["stages"][1]
    assert single["ratio"] == {"onnxruntime": 1.0, "torch": 1.0}  # the part is the whole stage


def test_the_cost_model_reads_a_bench_result(ort_build, tmp_path):
    build, result = ort_build
    write_bench(result, tmp_path / "bench.json")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "name": "measured", "devices": [{"name": n, "role": "requester" if n == "camera" else "device",
                                         "profile": "bench.json"} for n in ("camera", "pi-0", "pi-1")],
        "links": [{"between": ["camera", n], "bandwidth": "100Mbps"} for n in ("pi-0", "pi-1")]}))
    topology = load_topology(tmp_path / "t.yaml")
    graph = prepare_model("lenet5", SHAPE).graph
    plan = Plan.from_json(load_manifest(build)["plan"])
    simulated = {i.label: i.end_s - i.start_s for i in simulate(graph, plan, topology, requests=1).timeline
                 if i.kind == "compute"}
    runtime = result["runtime"]
    medians = {p["name"]: p["runs"][runtime]["median_s"] for p in result["parts"]}
    spatial, single, _ = result["stages"]
    assert sum(simulated[n] for n in spatial["parts"]) == pytest.approx(spatial["split_s"][runtime], rel=1e-9)
    assert simulated["s1"] == pytest.approx(medians["s1"], rel=1e-9)
    assert topology.device("pi-0").peak_flops == result["device_figures"]["peak_flops"]
    conv = result["layers"]["_0"]
    assert conv["kind"] == "conv2d" and conv["heights"]["28"] > 0 and len(conv["heights"]) >= 3


def test_tvm_x86_is_timed_and_a_part_nothing_here_runs_says_so(tvm_build):
    result = bench_build(tvm_build, runtimes=["tvm", "torch"], **FAST)
    parts = {p["name"]: p for p in result["parts"]}
    assert parts["s1"]["runs"] == {} and parts["s1"]["note"] == "no artifact runnable here (tvm aarch64)"
    if qemu.unavailable() is None:  # the Pi's library runs emulated: outputs checked, times kept apart
        (emulated,) = result["emulated"]
        assert emulated["name"] == "s1" and emulated["emulator"] == "qemu-aarch64"
        assert emulated["max_abs_error"] < 1e-4 and emulated["runs"] == 3 and "not the device" in emulated["note"]
        assert "s1" not in {p for p in result["layers"]} and all(
            "aarch64" not in run["target"] for p in result["parts"] for run in p["runs"].values())
    for name in ("s0_t0_h0", "s0_t1_h1", "s2_c0", "s2_merge"):
        assert parts[name]["runs"]["tvm"]["target"] == "tvm x86"
    spatial, single, fc = result["stages"]
    assert single["unsplit"] == {} and single["ratio"] == {}
    for stage in (spatial, fc):
        assert set(stage["ratio"]) == {"tvm", "torch"} and all(r > 0 for r in stage["ratio"].values())


def test_part_filter_times_only_those_and_their_stage_unsplit(ort_build):
    build, _ = ort_build
    result = bench_build(build, parts=["s0_t1_h0"], runtimes=["onnxruntime"], **FAST)
    assert [p["name"] for p in result["parts"]] == ["s0_t1_h0"]
    (stage,) = result["stages"]
    assert stage["index"] == 0 and stage["unsplit"]["onnxruntime"]["median_s"] > 0
    assert stage["ratio"] == {"onnxruntime": None}
    assert stage["missing"] == {"onnxruntime": ["s0_t0_h0", "s0_t1_h1", "s0_t2_h0"]}


def test_cli_writes_the_json_and_bad_input_is_one_line(ort_build, capsys, tmp_path):
    build, _ = ort_build
    assert main(["bench", str(build), "--part", "s1", "--runtimes", "onnxruntime", "--repeats", "2", "--json",
                 "-o", str(tmp_path / "b.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "b.json").read_text())
    assert printed["stages"][0]["ratio"] == {"onnxruntime": 1.0}
    cases = [([str(build), "--part", "s9"], f"{build}: no part 's9'; parts: s0_t0_h0, s0_t1_h0, s0_t1_h1, "
                                             "s0_t2_h0, s1, s2_c0, s2_c1, s2_merge"),
             ([str(tmp_path)], f"{tmp_path}: no manifest.json (not a halocut build)"),
             ([str(build), "--runtimes", "tensorrt"], "unknown runtime 'tensorrt'; runtimes: onnxruntime, tvm, torch"),
             ([str(build), "--repeats", "0"], "halocut bench: argument --repeats: 0: must be at least 1"),
             ([str(build), "--threads", "0"], "halocut bench: argument --threads: 0: must be at least 1")]
    for args, message in cases:
        assert main(["bench", *args]) == 2
        assert capsys.readouterr().err == f"halocut: error: {message}\n"


def test_a_model_that_does_not_rebuild_the_build_is_refused(ort_build):
    build, _ = ort_build
    with pytest.raises(HalocutError, match="cannot prepare the build's model 'nosuch.py:f' again"):
        bench_build(build, model="nosuch.py:f", **FAST)
    expected = r"plan does not fit model 'examples/models/tiny.py:build' \(plan: .* no layer named '_0'\)$"
    with pytest.raises(HalocutError, match=expected):
        bench_build(build, model="examples/models/tiny.py:build", **FAST)
