"""The training commands without Ray: ``halocut profile --training``, ``halocut train-plan`` (every policy,
``--json`` fields, a profile from the first feeding the second), and the one-line errors of ``halocut train``
and ``train-plan`` on malformed plans and topologies without the three roles."""

import json

import pytest

from halocut.compiler.cli import main
from halocut.ir.train_plan import TrainPlan
from halocut.planning.training import POLICIES

from tests.support import ROOT

TOPOLOGY = str(ROOT / "examples/topologies/hiertrain-1core.yaml")


def one_line_error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("halocut: error: ") and message in err, err


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_train_plan_json_for_every_policy(capsys, tmp_path, policy):
    out = tmp_path / "plan.json"
    assert main(["train-plan", "lenet5", "--topology", TOPOLOGY, "--batch", "16", "--policy", policy, "--json",
                 "-o", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"t_total_s", "policy", "mapping", "m_s", "m_l", "b_o", "b_s", "b_l", "planning_time_s"} <= set(printed)
    assert printed["policy"] == policy and printed["t_total_s"] > 0
    plan = TrainPlan.load(out)
    assert plan.to_json() == printed
    assert set(printed["per_worker"]) == {"device", "edge", "cloud"}
    if plan.is_hiertrain:
        assert sum(w["samples"] for w in printed["per_worker"].values()) == 16
    assert printed["compress_bits"] == (8 if policy == "jalad" else 32)


def test_a_training_profile_feeds_the_planner(capsys, tmp_path):
    assert main(["profile", "lenet5", "--training", "--batch", "4", "--repeats", "1", "-o",
                 str(tmp_path / "edge.json")]) == 0
    assert "profiled 5 layer groups of lenet5 for training at batch 4" in capsys.readouterr().out
    profile = json.loads((tmp_path / "edge.json").read_text())
    groups = profile["training"]["groups"]
    assert [g["name"] for g in groups] == ["_0", "_3", "_7", "_9", "_11"]
    assert all(g["forward_s"] > 0 and g["backward_s"] > 0 and g["update_s"] > 0 for g in groups)
    assert groups[0]["output_bytes"] == 4704 and groups[2]["param_bytes"] == 192480
    topology = tmp_path / "t.yaml"
    topology.write_text((ROOT / "examples/topologies/hiertrain-1core.yaml").read_text().replace(
        "    figures: {class: cpu, peak_flops: 76.8e+9, memory_bytes: 8.0e+9, memory_bandwidth_bytes_per_s: "
        "17.05e+9, backend: tvm-x86}", "    profile: edge.json"))
    assert main(["train-plan", "lenet5", "--topology", str(topology), "--batch", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tables"]["edge"].startswith("profile")


def test_train_plan_prints_the_schedule(capsys):
    assert main(["train-plan", "lenet5", "--topology", TOPOLOGY, "--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("hiertrain: T_total") and "planned in" in out and "device (device)" in out


def test_train_plan_errors(capsys, tmp_path):
    two = tmp_path / "two.yaml"
    two.write_text("name: two\ndevices:\n  - {name: d, role: requester, kind: rpi3b}\n"
                   "  - {name: e, role: edge, kind: intel-nuc}\nlinks:\n  - {between: [d, e], bandwidth: 5Mbps}\n")
    one_line_error(capsys, ["train-plan", "lenet5", "--topology", str(two), "--batch", "8"],
                   "HierTrain needs exactly one cloud machine")
    one_line_error(capsys, ["train-plan", "lenet5", "--topology", TOPOLOGY, "--batch", "8", "--policy", "fedavg"],
                   "unknown training policy 'fedavg'; policies: all-cloud")
    one_line_error(capsys, ["train-plan", "lenet5", "--topology", TOPOLOGY, "--batch", "0"], "--batch: 0: must be at least 1")
    one_line_error(capsys, ["train-plan", "lenet5", "--topology", TOPOLOGY, "--batch", "700", "--policy",
                            "hiertrain-exact"], "batch 700: the exact search evaluates")


def test_train_refuses_malformed_plans_before_starting_anything(capsys, tmp_path):
    plan = tmp_path / "plan.json"
    assert main(["train-plan", "lenet5", "--topology", TOPOLOGY, "--batch", "8", "-o", str(plan)]) == 0
    capsys.readouterr()
    data = json.loads(plan.read_text())
    cases = [({**data, "b_o": data["b_o"] + 1}, "expected the batch 8"),
             ({**data, "groups": ["a"] * 5}, "are not the model's layer groups"),
             ({**data, "model": "alexnet"}, "the plan is for model 'alexnet', not 'lenet5'"),
             ({**data, "mapping": None, "chain": ["device"] * 5}, "plans a chain of workers"),
             ({**data, "compress_bits": 8}, "compresses the edge-cloud link to 8 bits")]
    for changed, message in cases:
        plan.write_text(json.dumps(changed))
        one_line_error(capsys, ["train", "lenet5", "--topology", TOPOLOGY, "--plan", str(plan)], message)
    plan.write_text("[")
    one_line_error(capsys, ["train", "lenet5", "--topology", TOPOLOGY, "--plan", str(plan)], "not JSON")
    one_line_error(capsys, ["train", "lenet5", "--topology", TOPOLOGY, "--plan", str(tmp_path / "none.json")],
                   "does not exist")
    plan.write_text(json.dumps(data))
    one_line_error(capsys, ["train", "lenet5", "--topology", TOPOLOGY, "--plan", str(plan), "--kill", "edge"],
                   "expected MACHINE@ITERATION")
