"""``halocut schedule``: the JSON it prints, -o then --check, --gantt, every policy, a tampered schedule, and
one-line errors (exit 2, no traceback) for malformed workload files."""

import copy
import json

import pytest
import yaml

from halocut.compiler.cli import main
from halocut.planning.scheduling.online import POLICIES
from halocut.targets.workload import generate_workload

from tests.support import ROOT

SMALL = ROOT / "examples/workloads/small.yaml"
LENET5 = (("lenet5", (1, 3, 32, 32)),)


@pytest.fixture(scope="module")
def lenet_workload(tmp_path_factory):
    """A seeded workload of LeNet-5 tasks only (its preparation takes milliseconds), written as YAML."""
    workload = generate_workload(seed=7, devices=8, edges=2, window_s=1.0, models=LENET5, samples=(1, 50))
    path = tmp_path_factory.mktemp("workloads") / "lenet.yaml"
    path.write_text(yaml.safe_dump(workload.to_json()))
    return path


def schedule(capsys, *args):
    code = main(["schedule", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("halocut: error: ") and "Traceback" not in err, err
    return lines[0]


def test_json_of_small_has_the_documented_keys(capsys):
    code, out, err = schedule(capsys, "--workload", str(SMALL), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {"policy", "total_delay_s", "tasks", "scheduling_time_s"} <= set(data)
    assert data["policy"] == "deepar" and len(data["tasks"]) == 6
    assert data["total_delay_s"] == pytest.approx(sum(t["end_s"] - t["arrival_s"] for t in data["tasks"]))
    assert {t["name"] for t in data["tasks"]} == {"face-1", "alex-1", "lenet-1", "face-2", "alex-2", "alex-3"}


def test_output_then_check_passes(capsys, lenet_workload, tmp_path):
    written = tmp_path / "s.json"
    code, out, err = schedule(capsys, "--workload", str(lenet_workload), "-o", str(written))
    assert code == 0, err
    assert f"written to {written}" in out and json.loads(written.read_text())["policy"] == "deepar"
    code, out, err = schedule(capsys, "--workload", str(lenet_workload), "--check", str(written))
    assert code == 0, err
    assert out.startswith(f"{written}: 8 tasks satisfy constraints (8)-(19)") and err == ""


def test_gantt_writes_a_png(capsys, lenet_workload, tmp_path):
    chart = tmp_path / "gantt.png"
    code, _, err = schedule(capsys, "--workload", str(lenet_workload), "--gantt", str(chart))
    assert code == 0, err
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("policy", list(POLICIES))
def test_every_policy_schedules_and_its_schedule_checks(capsys, lenet_workload, tmp_path, policy):
    written = tmp_path / f"{policy}.json"
    code, out, err = schedule(capsys, "--workload", str(lenet_workload), "--policy", policy, "-o", str(written),
                              "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["policy"] == policy and len(data["tasks"]) == 8
    expected_choices = {"device-only": {"device"}, "edge-only": {"edge"}, "cloud-only": {"cloud"}}
    if policy in expected_choices:
        assert {t["choice"] for t in data["tasks"]} == expected_choices[policy]
    assert schedule(capsys, "--workload", str(lenet_workload), "--check", str(written))[0] == 0


def test_an_unknown_policy_lists_the_policies(capsys, lenet_workload):
    code, _, err = schedule(capsys, "--workload", str(lenet_workload), "--policy", "fastest")
    assert code == 2
    assert "unknown scheduling policy 'fastest'" in one_error_line(err) and "edge-only" in err


def _earlier(task):
    task["start_s"] -= task["arrival_s"] + 0.5  # half a second before the workload's t = 0
    task["end_s"] -= task["arrival_s"] + 0.5


TAMPERED = {
    "starts before it arrives": (_earlier, "before it arrives"),
    "runs faster than the cost model": (lambda t: t.update(end_s=(t["start_s"] + t["end_s"]) / 2), "eqs. 1-6 give"),
    "a start that is no number": (lambda t: t.update(start_s="soon"), ".start_s: 'soon' is not a number"),
    "three cuts": (lambda t: t.update(cuts=[0, 1, 2]), ".cuts: (0, 1, 2) is not two integers"),
    "more samples than the workload's": (lambda t: t.update(samples=t["samples"] + 1), "the workload says"),
}


@pytest.mark.parametrize("tamper", list(TAMPERED), ids=list(TAMPERED))
def test_a_tampered_schedule_fails_check(capsys, lenet_workload, tmp_path, tamper):
    written = tmp_path / "s.json"
    assert schedule(capsys, "--workload", str(lenet_workload), "-o", str(written))[0] == 0
    change, fragment = TAMPERED[tamper]
    data = json.loads(written.read_text())
    index, late = max(enumerate(data["tasks"]), key=lambda item: item[1]["arrival_s"])
    change(late)
    written.write_text(json.dumps(data))
    code, out, err = schedule(capsys, "--workload", str(lenet_workload), "--check", str(written))
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert line.startswith(f"halocut: error: {written}: ") and fragment in line, line
    assert f"task '{late['name']}'" in line or f"tasks[{index}]" in line, line


VALID = {
    "name": "bad",
    "cloud": {"name": "cloud", "kind": "tesla-k80"},
    "edges": [{"name": "edge-1", "kind": "gtx-1080ti", "capacity": 2, "downlink": "5Gbps", "uplink": "1Gbps"}],
    "devices": [{"name": "phone-1", "kind": "pixel-xl", "edges": ["edge-1"]}],
    "tasks": [{"name": "t1", "device": "phone-1", "model": "lenet5", "samples": 10, "arrival": "0s",
               "downlink": "100Mbps", "uplink": "20Mbps"}],
}


def changed(change):
    data = copy.deepcopy(VALID)
    change(data)
    return yaml.safe_dump(data)


MALFORMED = {
    "missing field": (changed(lambda d: d["tasks"][0].pop("samples")), "tasks[0]: 'samples' is a required property"),
    "bad unit": (changed(lambda d: d["tasks"][0].update(downlink="300Mbs")), "tasks[0].downlink: '300Mbs'"),
    "negative capacity": (changed(lambda d: d["edges"][0].update(capacity=-2)), "edges[0].capacity: -2"),
    "unknown device kind": (changed(lambda d: d["devices"][0].update(kind="iphone-99")),
                            "devices[0].kind: unknown kind 'iphone-99'"),
    "unknown edge kind": (changed(lambda d: d["edges"][0].update(kind="gtx-9999")), "edges[0].kind: unknown kind"),
    "task on an unknown device": (changed(lambda d: d["tasks"][0].update(device="phone-9")),
                                  "tasks[0].device: unknown device 'phone-9'"),
    "device reaching an unknown edge": (changed(lambda d: d["devices"][0].update(edges=["edge-1", "edge-7"])),
                                        "devices[0].edges[1]: unknown edge server 'edge-7'"),
    "duplicate task name": (changed(lambda d: d["tasks"].append(dict(d["tasks"][0]))), "tasks: duplicate task 't1'"),
    "duplicate machine name": (changed(lambda d: d["devices"][0].update(name="edge-1")),
                               "names: duplicate machine 'edge-1'"),
    "not YAML": ("name: [unclosed\ntasks: {\n", "not valid YAML"),
    "not a mapping": ("- name: bad\n- tasks: []\n", "top level: [{'name': 'bad'}, {'tasks': []}] is not of type"),
    "empty file": ("", "top level: None is not of type 'object'"),
    "unknown model name": (changed(lambda d: d["tasks"][0].update(model="vgg17")),
                           "tasks[0].model ('t1'): unknown model 'vgg17'"),
    "negative arrival": (changed(lambda d: d["tasks"][0].update(arrival="-1s")),
                         "tasks[0].arrival: must not be negative"),
    "arrival without a time unit": (changed(lambda d: d["tasks"][0].update(arrival="5 parsecs")),
                                    "tasks[0].arrival: '5 parsecs' is not a duration"),
    "zero samples": (changed(lambda d: d["tasks"][0].update(samples=0)), "tasks[0].samples: 0 is less than"),
    "zero bandwidth budget": (changed(lambda d: d["edges"][0].update(uplink="0Gbps")),
                              "edges[0].uplink: bandwidth must be positive"),
    "negative input size": (changed(lambda d: d["tasks"][0].update(input_size="-3KB")),
                            "tasks[0].input_size: must be positive"),
    "unknown top-level key": (changed(lambda d: d.update(edgez=[])), "top level: Additional properties"),
}


def test_the_valid_base_of_the_malformed_files_schedules(capsys, tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(VALID))
    code, out, err = schedule(capsys, "--workload", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)["tasks"][0]["name"] == "t1"


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_workload_is_one_line_exit_2(capsys, tmp_path, case):
    text, field = MALFORMED[case]
    path = tmp_path / "workload.yaml"
    path.write_text(text)
    code, out, err = schedule(capsys, "--workload", str(path))
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert line.startswith(f"halocut: error: {path}: ") and field in line, line
