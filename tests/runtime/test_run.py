"""The Ray runtime: builds run over local actors with mixed backends and give the original output;
tampered artifacts are refused; a killed actor mid-stream loses no request (restart or replan)."""

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import ray
import torch

from halocut.backends.manifest import load_manifest
from halocut.compiler.commands import reference_for, run_build
from halocut.compiler.driver import CompileOptions, compile_model
from halocut.compiler.prepare import prepare_model
from halocut.ir.errors import HalocutError
from halocut.runtime.flow import flow_from_manifest, run_local
from halocut.runtime.ray_actor import PartHost
from halocut.runtime.ray_exec import Deployment, connect
from halocut.runtime.run import RunOptions, make_inputs, verify

from tests.support import ROOT
from tests.support.plans import plan, row_tiles

TOPOLOGY = ROOT / "tests" / "data" / "runtime.yaml"  # two ONNX boards, a TVM x86 edge server, a torch server
DEVICES = ("board-a", "board-b", "edge", "server")
PLANS = {
    # three row tiles of the first volume, each a chain of two machines; layer2-3 on the server; the rest on board-a
    "resnet18": ((1, 3, 64, 64), [("spatial", "layer1_1_relu_1", (row_tiles(16, 16, [6, 11]), ["layer1_0_relu_1"])),
                                  ("single", "layer3_1_relu_1", 3), ("single", None, 0)]),
    # row tiles up to 16x16; the server to the passthrough's source; board-b to the concat; the head in two
    # row tiles whose pieces the requester stitches
    "yolov2": ((1, 3, 64, 64), [("spatial", "stage1_6_2", row_tiles(16, 16, [6, 11])),
                                ("single", "stage1_16_2", 3), ("single", "cat", 1),
                                ("spatial", None, row_tiles(2, 2, [1]))]),
    # fc clusters by input features (summed) and by output features, each merged where it is used next
    "lenet5": ((1, 3, 32, 32), [("single", "_6", 0), ("fc", "_8", ("data", [(0, 150), (150, 400)])),
                                ("fc", "_10", ("model", [(0, 40), (40, 84)])), ("single", None, 3)]),
}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    made = {}
    for model, (shape, segments) in PLANS.items():
        graph = prepare_model(model, shape).graph
        plan(graph, model, shape, segments, devices=DEVICES).save(root / f"{model}.plan.json")
        compile_model(CompileOptions(model, TOPOLOGY, root / model, root / f"{model}.plan.json", input_shape=shape,
                                     progress=False))
        made[model] = root / model
    return made


@pytest.fixture(scope="module")
def cluster():
    """One embedded Ray session for the module, offering every machine of the test topology."""
    started = connect(list(DEVICES) + ["camera"])
    yield
    if started:
        ray.shutdown()


def inputs_and_expected(model, shape, count):
    module = prepare_model(model, shape).module
    xs = [torch.randn(shape, generator=torch.Generator().manual_seed(i)).numpy() for i in range(count)]
    with torch.no_grad():
        return xs, [module(torch.from_numpy(x)).numpy() for x in xs]


def assert_answers(answers, expected):
    assert len(answers) == len(expected) and all(a is not None for a in answers)
    for answer, reference in zip(answers, expected):
        (value,) = answer.values()
        np.testing.assert_allclose(value, reference, rtol=0, atol=1e-4 * max(1.0, float(np.abs(reference).max())))


def test_flow_runs_in_process_like_the_model(builds):
    for model in ("resnet18", "lenet5", "yolov2"):
        flow = flow_from_manifest(load_manifest(builds[model]))
        host = PartHost("here")
        host.host(list(flow.steps), {a["path"]: (builds[model] / a["path"]).read_bytes()
                                     for s in flow.steps for a in s.artifacts}, {})
        xs, expected = inputs_and_expected(model, flow.input_shape, 1)
        assert_answers([run_local(flow, host.runners, xs[0])], expected)
    tile = flow_from_manifest(load_manifest(builds["resnet18"])).step("s1")
    assert [(r.from_part, r.rows) for r in tile.receives] == [("s0_t0_h1", (0, 6)), ("s0_t1_h1", (6, 11)),
                                                              ("s0_t2_h1", (11, 16))]
    finals = flow_from_manifest(load_manifest(builds["yolov2"])).finals
    assert [(f.part, f.rows, f.shape) for f in finals] == [("s3_t0_h0", (0, 1), (1, 425, 2, 2)),
                                                           ("s3_t1_h0", (1, 2), (1, 425, 2, 2))]


class TestResnet18OverFourActors:
    """One deployment for the class: the tests after the first kill its actors."""

    @pytest.fixture(scope="class")
    @classmethod
    def resnet18(cls, builds, cluster):
        flow = flow_from_manifest(load_manifest(builds["resnet18"]))
        with Deployment(flow, builds["resnet18"], threads=1) as deployment:
            yield deployment

    def test_mixed_backends_give_the_original_output(self, resnet18):
        assert resnet18.graph == "compiled" and set(resnet18.actors) == set(DEVICES)
        assert set(resnet18.backends.values()) == {"onnx", "tvm x86", "torch"}
        xs, expected = inputs_and_expected("resnet18", (1, 3, 64, 64), 4)
        answers, latencies = resnet18.stream(xs, window=3)
        assert_answers(answers, expected)
        assert all(latency > 0 for latency in latencies)
        statistics = resnet18.statistics()
        assert set(statistics) == {s.name for s in resnet18.flow.steps}
        assert statistics["s0_t0_h0"]["bytes_sent"] > 0 and statistics["s0_t0_h0"]["compute_s"] > 0

    def test_killed_actor_is_restarted_and_no_request_is_lost(self, resnet18):
        xs, expected = inputs_and_expected("resnet18", (1, 3, 64, 64), 20)
        before = len(resnet18.recoveries)

        def kill(index):
            if index == 4:
                os.kill(resnet18.pid("edge"), signal.SIGKILL)

        answers, _ = resnet18.stream(xs, window=4, on_answer=kill)
        assert_answers(answers, expected)
        (recovery,) = resnet18.recoveries[before:]
        assert recovery.kind == "restart" and recovery.device == "edge" and recovery.seconds > 0
        assert resnet18.placement["s0_t2_h0"] == "edge"

    def test_lost_machine_is_replanned_on_the_others(self, resnet18):
        xs, expected = inputs_and_expected("resnet18", (1, 3, 64, 64), 20)
        before = len(resnet18.recoveries)

        def lose(index):
            if index == 3:
                ray.kill(resnet18.actors["server"], no_restart=True)

        answers, _ = resnet18.stream(xs, window=4, on_answer=lose)
        assert_answers(answers, expected)
        (recovery,) = resnet18.recoveries[before:]
        assert recovery.kind == "replan" and recovery.device == "server"
        assert "server" not in resnet18.actors and "server" not in resnet18.placement.values()


def kill_while_hosting(monkeypatch, device, lose=False):
    """Make ``device``'s actor die the first time parts are sent: SIGKILL (Ray restarts it) or, with ``lose``,
    killed for good (its machine is lost). The process ids are known by then, as in a real start-up."""
    original, calls = Deployment._host, []

    def host(self):
        if not calls:
            calls.append(device)
            if lose:
                ray.kill(self.actors[device], no_restart=True)
            else:
                os.kill(self.pids[device], signal.SIGKILL)
        return original(self)

    monkeypatch.setattr(Deployment, "_host", host)
    return calls


@pytest.mark.parametrize("lose", [False, True], ids=["restarted", "lost"])
def test_actor_dying_while_its_parts_are_hosted_is_recovered(builds, cluster, monkeypatch, lose):
    """Issue 18, item 15: a death during start-up gets the restart or replan a death mid-stream gets."""
    flow = flow_from_manifest(load_manifest(builds["resnet18"]))
    xs, expected = inputs_and_expected("resnet18", (1, 3, 64, 64), 3)
    calls = kill_while_hosting(monkeypatch, "edge", lose)
    with Deployment(flow, builds["resnet18"], threads=1) as deployment:
        assert calls == ["edge"] and deployment.graph == "compiled"
        (recovery,) = deployment.recoveries
        assert (recovery.kind, recovery.device, recovery.resent) == ("replan" if lose else "restart", "edge", 0)
        assert ("edge" in deployment.placement.values()) is not lose
        answers, _ = deployment.stream(xs, window=2)
    assert_answers(answers, expected)


def test_start_up_gives_up_with_one_line_when_every_try_fails(builds, cluster, monkeypatch):
    flow = flow_from_manifest(load_manifest(builds["lenet5"]))
    original = Deployment._host

    def host(self):  # every attempt meets a dead actor
        os.kill(self.pids["board-a"], signal.SIGKILL)
        return original(self)

    monkeypatch.setattr(Deployment, "_host", host)
    with pytest.raises(HalocutError, match=r"^giving up after 2 recoveries; last failure: ") as caught:
        Deployment(flow, builds["lenet5"], threads=1, max_recoveries=2, max_restarts=5).start()
    assert "\n" not in str(caught.value)


def test_actor_killed_on_the_plain_dag_api_is_recovered(builds, cluster, capfd):
    """On the plain API a part receiving from a dead actor fails with a task error: that is the death, recovered
    (not "a part failed on its actor"); Ray's "(raylet) A worker died" message reaches neither stream."""
    flow = flow_from_manifest(load_manifest(builds["lenet5"]))
    xs, expected = inputs_and_expected("lenet5", flow.input_shape, 8)
    with Deployment(flow, builds["lenet5"], threads=1, compiled=False) as deployment:
        def kill(index):
            if index == 2:
                os.kill(deployment.pid("board-a"), signal.SIGKILL)

        answers, _ = deployment.stream(xs, window=3, on_answer=kill)
        assert [r.kind for r in deployment.recoveries] == ["restart"]
        time.sleep(2)  # Ray's driver polls the raylets' error messages
    assert_answers(answers, expected)
    out, err = capfd.readouterr()
    assert "A worker died" not in out + err and "(raylet)" not in out + err


def test_yolov2_over_four_actors(builds, cluster):
    flow = flow_from_manifest(load_manifest(builds["yolov2"]))
    xs, expected = inputs_and_expected("yolov2", flow.input_shape, 2)
    with Deployment(flow, builds["yolov2"], threads=1) as deployment:
        assert len(deployment.actors) == 4 and set(deployment.backends.values()) == {"onnx", "tvm x86", "torch"}
        answers, _ = deployment.stream(xs, window=2)
    assert_answers(answers, expected)


def test_fc_clusters_on_the_plain_dag_api(builds, cluster):
    flow = flow_from_manifest(load_manifest(builds["lenet5"]))
    xs, expected = inputs_and_expected("lenet5", flow.input_shape, 3)
    with Deployment(flow, builds["lenet5"], threads=1, compiled=False) as deployment:
        assert deployment.graph == "plain"
        answers, _ = deployment.stream(xs, window=2)
    assert_answers(answers, expected)


def test_actor_refuses_an_artifact_that_does_not_match_its_sha256(builds, cluster, tmp_path):
    build = tmp_path / "tampered"
    shutil.copytree(builds["lenet5"], build)
    flow = flow_from_manifest(json.loads((build / "manifest.json").read_text()))
    artifact = build / flow.steps[0].artifacts[0]["path"]
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(HalocutError, match=r"on 'board-a': board-a/s0.onnx does not match its sha256 in the manifest"):
        Deployment(flow, build, threads=1).start()
    with pytest.raises(HalocutError, match="does not match its sha256"):
        run_build(RunOptions(build, requests=1))


def test_a_staged_build_is_read_on_each_machine_sent_nowhere_and_still_checked(builds, cluster, tmp_path,
                                                                                 monkeypatch):
    """--staged: the actors read the copy of the build each machine holds (here: one disk); nothing is put in
    Ray's object store for them, a tampered or missing staged file is refused in one line naming the part."""
    flow = flow_from_manifest(load_manifest(builds["lenet5"]))
    xs, expected = inputs_and_expected("lenet5", flow.input_shape, 2)
    copy = tmp_path / "copy"
    shutil.copytree(builds["lenet5"], copy)
    put = []
    monkeypatch.setattr(ray, "put", lambda value, **k: put.append(value))  # only hosting calls ray.put here
    with Deployment(flow, builds["lenet5"], threads=1, compiled=False, staged=copy) as deployment:
        answers, _ = deployment.stream(xs, window=1)
    assert_answers(answers, expected)
    assert put == []
    artifact = copy / flow.steps[0].artifacts[0]["path"]
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(HalocutError, match=r"on 'board-a': board-a/s0.onnx does not match its sha256"):
        Deployment(flow, builds["lenet5"], threads=1, staged=copy).start()
    artifact.unlink()
    with pytest.raises(HalocutError, match=r"part 's0' on 'board-a' .*staged artifact: .*s0.onnx.* copied to "):
        Deployment(flow, builds["lenet5"], threads=1, staged=copy).start()


def test_reference_falls_back_to_the_build_and_a_mismatch_is_an_error(builds):
    build = builds["lenet5"]
    flow = flow_from_manifest(load_manifest(build))
    xs, expected = inputs_and_expected("lenet5", flow.input_shape, 1)
    reference, label = reference_for(flow, build, "nowhere.py:build", None)
    assert label.startswith("in-process executor of the same artifacts (the model does not load here: model ")
    assert_answers([reference(xs[0])], expected)
    original, label = reference_for(flow, build, None, None)
    assert label == "original model"
    assert verify([original(xs[0])], xs, original, label)[0] == 0.0
    wrong = {"_11": expected[0] + 1e-2}
    with pytest.raises(HalocutError, match=r"request 0: the deployment's output differs from the original model: "
                                           r"max abs error 0.01 > 0.0001"):
        verify([wrong], xs, original, label)


def test_image_input_is_resized_and_normalised(builds, tmp_path):
    from PIL import Image

    flow = flow_from_manifest(load_manifest(builds["lenet5"]))
    Image.new("RGB", (50, 40), (255, 0, 128)).save(tmp_path / "image.png")
    xs = make_inputs(flow, tmp_path / "image.png", 2, seed=0)
    assert len(xs) == 2 and xs[0].shape == flow.input_shape and xs[0].dtype == np.float32
    np.testing.assert_allclose(xs[0][0, :, 5, 5], [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224,
                                                   (128 / 255 - 0.406) / 0.225], rtol=1e-5)
    with pytest.raises(HalocutError, match="cannot read it as an image"):
        make_inputs(flow, tmp_path / "missing.png", 1, seed=0)
    noise = make_inputs(flow, None, 3, seed=0)
    assert not np.array_equal(noise[0], noise[1]) and np.array_equal(noise[0], make_inputs(flow, None, 1, 0)[0])


def test_run_command_joins_a_cluster_verifies_and_measures(builds, cluster, halocut_cli, cli_env):
    address = ray.get_runtime_context().gcs_address  # as on real machines: the actors go where the resources are
    result = subprocess.run([halocut_cli, "run", str(builds["lenet5"]), "--requests", "4", "--json", "--address", address],
                            capture_output=True, text=True, env=cli_env, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is exactly one JSON object; stderr carries halocut's own lines only
    assert all(line.startswith("halocut: ") for line in result.stderr.splitlines()), result.stderr
    assert report["max_abs_error"] <= report["tolerance"] and report["reference"] == "original model"
    assert report["requests_lost"] == 0 and report["graph"] == "compiled" and report["throughput_ips"] > 0
    assert 0 < report["latency_s"]["median"] <= report["latency_s"]["p90"]
    assert report["predicted_latency_s"] > 0 and {a["device"] for a in report["actors"]} == {"board-a", "board-b",
                                                                                             "server"}
    missing = subprocess.run([halocut_cli, "run", str(builds["lenet5"].parent / "nowhere")], capture_output=True,
                             text=True, env=cli_env, timeout=600)
    assert missing.returncode == 2 and missing.stderr.startswith("halocut: error: ") and "no manifest.json" in \
        missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_missing_machine_resource_is_an_error(cluster):
    with pytest.raises(HalocutError, match=r"no machine in this Ray session offers the resource 'pi-9' .*ray start"):
        connect(["board-a", "pi-9"])
