"""The profiler drives the simulator; `halocut topology check`, `simulate` and `profile` from the shell."""

import json
import subprocess

import pytest
import yaml

from halocut.compiler.commands import profile_model
from halocut.compiler.prepare import prepare_model
from halocut.ir.graph import compute_nodes
from halocut.ir.plan import single_device_plan
from halocut.runtime.profile import write_profile
from halocut.runtime.simulate import simulate
from halocut.targets.topology import load_topology

from tests.support import ROOT


def run(halocut_cli, cli_env, *args, cwd=ROOT):
    return subprocess.run([halocut_cli, *args], capture_output=True, text=True, env=cli_env, cwd=cwd, timeout=600)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_profile_drives_the_simulator(tmp_path, runtime):
    profile = profile_model("lenet5", runtime=runtime, repeats=3, progress=False)
    conv = profile["layers"]["_0"]
    assert conv["kind"] == "conv2d" and sorted(map(int, conv["heights"])) == [1, 2, 4, 8, 16, 28]
    assert all(t > 0 for t in conv["heights"].values())
    write_profile(profile, tmp_path / "local.json")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "name": "measured", "devices": [{"name": "me", "role": "requester", "profile": "local.json"},
                                        {"name": "pi", "role": "device", "kind": "rpi4"}],
        "links": [{"between": ["me", "pi"], "bandwidth": "100Mbps"}]}))
    topology = load_topology(tmp_path / "t.yaml")
    prepared = prepare_model("lenet5")
    plan = single_device_plan(prepared.graph, "lenet5", prepared.input_shape, "me")
    result = simulate(prepared.graph, plan, topology, requests=1)
    measured = sum(profile["layers"][n.name]["latency_s"] for n in compute_nodes(prepared.graph)
                   if n.name in profile["layers"])
    assert result.latency_s == pytest.approx(measured)


def test_topology_check_prints_devices_and_links(halocut_cli, cli_env):
    result = run(halocut_cli, cli_env, "topology", "check", "examples/topologies/coopai-rpi4x4.yaml")
    assert result.returncode == 0, result.stderr
    for text in ("pi-3", "gateway", "100 Mbps", "13.6"):
        assert text in result.stdout


def test_topology_check_bad_file_is_one_line(halocut_cli, cli_env, tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"name": "b", "devices": [
        {"name": "cam", "role": "requester", "kind": "rpi9"}], "links": []}))
    result = run(halocut_cli, cli_env, "topology", "check", str(tmp_path / "bad.yaml"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "devices[0].kind: unknown kind 'rpi9'" in result.stderr


def test_simulate_json_and_gantt(halocut_cli, cli_env, tmp_path):
    gantt = tmp_path / "g.png"
    result = run(halocut_cli, cli_env, "simulate", "lenet5", "--topology", "examples/topologies/default.yaml",
                 "--gantt", str(gantt), "--json", "--requests", "3")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"latency_s", "throughput_ips", "lower_bound_s", "busy_s"} <= set(report)
    assert 0 < report["lower_bound_s"] <= report["latency_s"]
    assert gantt.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_rejects_a_plan_for_another_shape(halocut_cli, cli_env, tmp_path):
    prepared = prepare_model("lenet5")
    plan = single_device_plan(prepared.graph, "lenet5", (1, 3, 36, 36), "camera")
    plan.save(tmp_path / "p.json")
    result = run(halocut_cli, cli_env, "simulate", "lenet5", "--topology", "examples/topologies/default.yaml",
                 "--plan", str(tmp_path / "p.json"), "--input-shape", "1,3,32,32")
    assert result.returncode == 2 and "plan is for input shape (1, 3, 36, 36)" in result.stderr


def test_profile_command_writes_a_profile(halocut_cli, cli_env, tmp_path):
    result = run(halocut_cli, cli_env, "profile", "lenet5", "--device", "local", "-o", str(tmp_path / "p.json"),
                 "--repeats", "2")
    assert result.returncode == 0, result.stderr
    profile = json.loads((tmp_path / "p.json").read_text())
    assert profile["format"] == "halocut-profile/1" and profile["device_figures"]["peak_flops"] > 0
