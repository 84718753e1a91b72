"""Issue 18: a table of malformed and hostile inputs over every command. Each is refused with exit 2 and exactly
one stderr line (``halocut: error: ...`` naming the file, field or flag), within 10 s, leaving nothing behind in
its folder and never running code it was handed (a marker file a payload would write stays absent)."""

import json
import os
import pickle
import shutil
import time

import pytest
import yaml

from halocut.compiler.cli import main
from halocut.compiler.driver import CompileOptions, compile_model
from halocut.backends.signing import keygen
from tests.support import ROOT

TOPOLOGY = str(ROOT / "examples/topologies/default.yaml")
HIERTRAIN = str(ROOT / "examples/topologies/hiertrain.yaml")
WORKLOAD = str(ROOT / "examples/workloads/small.yaml")
GOOD = yaml.safe_load((ROOT / "examples/topologies/default.yaml").read_text())


class Payload:
    """Unpickling this writes the marker: what a hostile file would do if halocut unpickled it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    out = root / "build"
    compile_model(CompileOptions("lenet5", TOPOLOGY, out, backends=("onnx",), progress=False))
    keygen(root / "key")
    return out


def topology(d, text):
    (d / "t.yaml").write_text(text)
    return str(d / "t.yaml")


def edited(d, change):
    data = json.loads(json.dumps(GOOD))
    change(data)
    return topology(d, yaml.safe_dump(data))


def first_link(d, **fields):
    """``topology check`` of the good topology with its first link's ``fields`` replaced."""
    return ["topology", "check", edited(d, lambda t: t["links"][0].update(fields))]


def nested(depth):
    return "[" * depth + "]" * depth


def laughs():
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for k, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[k]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 10) + "]")
    return "name: lol\n" + "\n".join(lines) + "\n"


def copy_build(build, d, name="b"):
    target = d / name
    shutil.copytree(build, target)
    return target


def manifest_edit(build, d, change):
    target = copy_build(build, d)
    data = json.loads((target / "manifest.json").read_text())
    change(data)
    (target / "manifest.json").write_text(json.dumps(data))
    return str(target)


def first_part(data):
    return next(p for e in data["devices"].values() for p in e["parts"])


def symlinked(build, d):
    target = copy_build(build, d)
    part = first_part(json.loads((target / "manifest.json").read_text()))
    path = target / part["artifacts"][0]["path"]
    outside = d / "outside.onnx"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)
    return str(target)


def pickled(d, marker, name="p.pt"):
    with open(d / name, "wb") as out:
        pickle.dump(Payload(str(marker)), out)
    return str(d / name)


def plan_file(d, text):
    (d / "p.json").write_text(text)
    return str(d / "p.json")


# (label, argv from (tmp dir, build, marker), what the one line must say)
CASES = [
    # inspect
    ("inspect unknown model", lambda d, b, m: ["inspect", "nosuchnet"], "nosuchnet"),
    ("inspect shape not numbers", lambda d, b, m: ["inspect", "lenet5", "--input-shape", "a,b"], "a,b"),
    ("inspect shape negative", lambda d, b, m: ["inspect", "lenet5", "--input-shape", "1,3,-4,4"], "-4"),
    ("inspect shape enormous", lambda d, b, m: ["inspect", "lenet5", "--input-shape", "1,3,100000,100000"],
     "100000"),
    ("inspect model file missing", lambda d, b, m: ["inspect", str(d / "m.py") + ":f"], "does not exist"),
    ("inspect factory missing", lambda d, b, m: [
        "inspect", (d / "m.py").write_text("x = 1\n") and str(d / "m.py") + ":make"], "make"),
    ("inspect factory exits", lambda d, b, m: [
        "inspect", (d / "m.py").write_text("import sys\ndef make():\n    sys.exit(0)\n") and str(d / "m.py") + ":make"],
     "exit"),
    ("inspect factory not a module", lambda d, b, m: [
        "inspect", (d / "m.py").write_text("def make():\n    return 3\n") and str(d / "m.py") + ":make"], "make"),
    ("inspect weights missing", lambda d, b, m: ["inspect", "lenet5", "--weights", str(d / "w.pt")],
     "does not exist"),
    ("inspect weights pickle payload", lambda d, b, m: ["inspect", "lenet5", "--weights", pickled(d, m)], "w"),
    # topology check
    ("topology missing", lambda d, b, m: ["topology", "check", str(d / "none.yaml")], "does not exist"),
    ("topology folder", lambda d, b, m: ["topology", "check", str(d)], "folder"),
    ("topology not UTF-8", lambda d, b, m: ["topology", "check", (d / "t.yaml").write_bytes(b"name: \xff\n") and
                                            str(d / "t.yaml")], "not UTF-8"),
    ("topology bad YAML", lambda d, b, m: ["topology", "check", topology(d, "devices: [unclosed\n")], "not valid YAML"),
    ("topology a list", lambda d, b, m: ["topology", "check", topology(d, "- 1\n- 2\n")], "t.yaml"),
    ("topology nested deep", lambda d, b, m: ["topology", "check", topology(d, nested(200))], "levels deep"),
    ("topology billion laughs", lambda d, b, m: ["topology", "check", topology(d, laughs())], "t.yaml"),
    ("topology over the size limit", lambda d, b, m: [
        "topology", "check", topology(d, "# " + "x" * (5 * 1024 * 1024))], "this file may have"),
    ("topology NaN bandwidth", lambda d, b, m: first_link(d, bandwidth="nanMbps"), "links[0].bandwidth"),
    ("topology infinite bandwidth", lambda d, b, m: first_link(d, bandwidth="1e999Gbps"), "links[0].bandwidth"),
    ("topology zero bandwidth", lambda d, b, m: first_link(d, bandwidth="0Mbps"), "links[0].bandwidth"),
    ("topology negative latency", lambda d, b, m: first_link(d, latency="-3ms"), "links[0].latency"),
    ("topology NaN latency", lambda d, b, m: first_link(d, latency=".nan"), "links[0].latency"),
    ("topology unknown kind", lambda d, b, m: ["topology", "check", edited(
        d, lambda t: t["devices"][1].update(kind="toaster"))], "toaster"),
    ("topology duplicate device", lambda d, b, m: ["topology", "check", edited(
        d, lambda t: t["devices"].append(dict(t["devices"][1])))], t_name := GOOD["devices"][1]["name"]),
    ("topology link to nowhere", lambda d, b, m: ["topology", "check", edited(
        d, lambda t: t["links"][0].update(between=[t["links"][0]["between"][0], "ghost"]))], "ghost"),
    ("topology without a name", lambda d, b, m: ["topology", "check", edited(d, lambda t: t.pop("name"))], "name"),
    ("topology profile missing", lambda d, b, m: ["topology", "check", edited(
        d, lambda t: t["devices"][1].pop("kind") and t["devices"][1].update(profile="none.json"))], "none.json"),
    ("topology profile a list", lambda d, b, m: ["topology", "check", (d / "l.json").write_text("[1]") and edited(
        d, lambda t: t["devices"][1].pop("kind") and t["devices"][1].update(profile="l.json"))], "l.json"),
    ("topology profile not JSON", lambda d, b, m: ["topology", "check", (d / "l.json").write_text("{") and edited(
        d, lambda t: t["devices"][1].pop("kind") and t["devices"][1].update(profile="l.json"))], "not JSON"),
    # plan
    ("plan unknown planner", lambda d, b, m: ["plan", "lenet5", "--topology", TOPOLOGY, "--planner", "magic"],
     "magic"),
    ("plan topology missing", lambda d, b, m: ["plan", "lenet5", "--topology", str(d / "t.yaml")],
     "does not exist"),
    ("plan unknown model", lambda d, b, m: ["plan", "nosuchnet", "--topology", TOPOLOGY], "nosuchnet"),
    ("plan -o exists", lambda d, b, m: ["plan", "lenet5", "--topology", TOPOLOGY, "-o",
                                        plan_file(d, "{}")], "use --force"),
    ("plan -o under a file", lambda d, b, m: ["plan", "lenet5", "--topology", TOPOLOGY, "-o",
                                              plan_file(d, "{}") + "/x.json"], "is a file, not a folder"),
    ("plan -o a folder", lambda d, b, m: ["plan", "lenet5", "--topology", TOPOLOGY, "-o", str(d)], "is a folder"),
    # simulate
    ("simulate requests zero", lambda d, b, m: ["simulate", "lenet5", "--topology", TOPOLOGY, "--requests", "0"],
     "--requests"),
    ("simulate plan missing", lambda d, b, m: ["simulate", "lenet5", "--topology", TOPOLOGY, "--plan",
                                               str(d / "p.json")], "does not exist"),
    ("simulate plan not JSON", lambda d, b, m: ["simulate", "lenet5", "--topology", TOPOLOGY, "--plan",
                                                plan_file(d, "{nope")], "not JSON"),
    ("simulate plan a list", lambda d, b, m: ["simulate", "lenet5", "--topology", TOPOLOGY, "--plan",
                                              plan_file(d, "[]")], "p.json"),
    ("simulate plan nested deep", lambda d, b, m: ["simulate", "lenet5", "--topology", TOPOLOGY, "--plan",
                                                   plan_file(d, nested(5000))], "levels deep"),
    ("simulate plan not UTF-8", lambda d, b, m: ["simulate", "lenet5", "--topology", TOPOLOGY, "--plan", (
        d / "p.json").write_bytes(b'{"\xfe": 1}') and str(d / "p.json")], "not UTF-8"),
    ("simulate plan wrong layers", lambda d, b, m: ["simulate", "lenet5", "--topology", TOPOLOGY, "--plan",
                                                    plan_file(d, json.dumps({
                                                        "model": "lenet5", "input_shape": [1, 3, 32, 32],
                                                        "stages": [{"kind": "single", "nodes": ["ghost"],
                                                                    "device": "cloud"}]}))], "p.json"),
    ("simulate gantt exists", lambda d, b, m: ["simulate", "lenet5", "--topology", TOPOLOGY, "--gantt",
                                               plan_file(d, "x")], "use --force"),
    # compile
    ("compile without topology", lambda d, b, m: ["compile", "lenet5"], "--topology"),
    ("compile output is a file", lambda d, b, m: ["compile", "lenet5", "--topology", TOPOLOGY, "-o",
                                                  plan_file(d, "x")], "not a directory"),
    ("compile output not empty", lambda d, b, m: ["compile", "lenet5", "--topology", TOPOLOGY, "-o",
                                                  str(copy_build(b, d))], "use --force"),
    ("compile sign key missing", lambda d, b, m: ["compile", "lenet5", "--topology", TOPOLOGY, "-o", str(d / "o"),
                                                  "--sign", str(d / "k")], "does not exist"),
    ("compile sign key not a key", lambda d, b, m: ["compile", "lenet5", "--topology", TOPOLOGY, "-o",
                                                    str(d / "o"), "--sign", plan_file(d, "x")], "private key"),
    ("compile sign with a public key", lambda d, b, m: ["compile", "lenet5", "--topology", TOPOLOGY, "-o",
                                                        str(d / "o"), "--sign", str(b.parent / "key.pub")],
     "private key"),
    ("compile tune negative", lambda d, b, m: ["compile", "lenet5", "--topology", TOPOLOGY, "--tune", "-1"],
     "--tune"),
    ("compile stop after nothing", lambda d, b, m: ["compile", "lenet5", "--topology", TOPOLOGY, "-o", str(d / "o"),
                                                    "--stop-after", "nap"], "nap"),
    ("compile unknown backend", lambda d, b, m: ["compile", "lenet5", "--topology", TOPOLOGY, "-o", str(d / "o"),
                                                 "--backends", "cobol"], "cobol"),
    ("compile plan missing", lambda d, b, m: ["compile", "lenet5", "--topology", TOPOLOGY, "-o", str(d / "o"),
                                              "--plan", str(d / "p.json")], "does not exist"),
    ("compile weights payload", lambda d, b, m: ["compile", "lenet5", "--topology", TOPOLOGY, "-o", str(d / "o"),
                                                 "--weights", pickled(d, m)], "p.pt"),
    # profile
    ("profile repeats zero", lambda d, b, m: ["profile", "lenet5", "--repeats", "0", "-o", str(d / "p.json")],
     "--repeats"),
    ("profile -o exists", lambda d, b, m: ["profile", "lenet5", "-o", plan_file(d, "{}")], "use --force"),
    ("profile -o a folder", lambda d, b, m: ["profile", "lenet5", "-o", str(d)], "is a folder"),
    ("profile batch zero", lambda d, b, m: ["profile", "lenet5", "--training", "--batch", "0", "-o",
                                            str(d / "p.json")], "--batch"),
    ("profile device without address", lambda d, b, m: ["profile", "lenet5", "--device", "pi", "-o", str(d / "p.json")],
     "--address"),
    ("profile address for local", lambda d, b, m: ["profile", "lenet5", "--address", "127.0.0.1:1", "-o",
                                                   str(d / "p.json")], "--address"),
    ("profile device training", lambda d, b, m: ["profile", "lenet5", "--device", "pi", "--address", "127.0.0.1:1",
                                                 "--training", "-o", str(d / "p.json")], "--training"),
    ("profile device unreachable", lambda d, b, m: ["profile", "lenet5", "--device", "pi", "--address", "127.0.0.1:1",
                                                    "-o", str(d / "p.json")], "127.0.0.1:1"),
    ("profile unknown runtime", lambda d, b, m: ["profile", "lenet5", "--runtime", "cuda", "-o", str(d / "p.json")],
     "cuda"),
    # bench
    ("bench build missing", lambda d, b, m: ["bench", str(d / "none")], "no manifest.json"),
    ("bench manifest not JSON", lambda d, b, m: ["bench", str(copy_build(b, d)), "-o", str(d / "x.json")]
     if (d / "b/manifest.json").exists() else ["bench", (lambda t: (t / "manifest.json").write_text("{") and str(t))(
         copy_build(b, d))], "not JSON"),
    ("bench manifest bad part name", lambda d, b, m: ["bench", manifest_edit(
        b, d, lambda x: first_part(x).update(name="bogus!"))], "is not a part name"),
    ("bench manifest path out of the build", lambda d, b, m: ["bench", manifest_edit(
        b, d, lambda x: first_part(x)["artifacts"][0].update(path="../../etc/passwd"))], "artifacts[0].path"),
    ("bench symlink out of the build", lambda d, b, m: ["bench", symlinked(b, d)], "outside the build"),
    ("bench tampered artifact", lambda d, b, m: ["bench", (lambda t: (lambda p: p.write_bytes(
        p.read_bytes() + b"\0"))(next(t.rglob("*.onnx"))) and str(t))(copy_build(b, d))], "sha256"),
    ("bench unsigned with trust", lambda d, b, m: ["bench", str(b), "--trust", str(b.parent / "key.pub")],
     "unsigned build"),
    ("bench trust key missing", lambda d, b, m: ["bench", str(b), "--trust", str(d / "k.pub")], "does not exist"),
    ("bench trust not a key", lambda d, b, m: ["bench", str(b), "--trust", plan_file(d, "x")], "public key"),
    ("bench -o exists", lambda d, b, m: ["bench", str(b), "-o", plan_file(d, "{}")], "use --force"),
    ("bench unknown part", lambda d, b, m: ["bench", str(b), "--part", "s99", "-o", str(d / "x.json")], "s99"),
    ("bench unknown runtime", lambda d, b, m: ["bench", str(b), "--runtimes", "tpu", "-o", str(d / "x.json")],
     "tpu"),
    ("bench threads zero", lambda d, b, m: ["bench", str(b), "--threads", "0"], "--threads"),
    # run
    ("run build missing", lambda d, b, m: ["run", str(d / "none")], "no manifest.json"),
    ("run requests zero", lambda d, b, m: ["run", str(b), "--requests", "0"], "--requests"),
    ("run address not host:port", lambda d, b, m: ["run", str(b), "--address", "nohost"], "HOST:PORT"),
    ("run testbed unknown", lambda d, b, m: ["run", str(b), "--testbed", "nosuchbed"], "no state file"),
    ("run testbed and address", lambda d, b, m: ["run", str(b), "--testbed", "--address", "127.0.0.1:1"],
     "--testbed"),
    ("run trust unsigned", lambda d, b, m: ["run", str(b), "--trust", str(b.parent / "key.pub")], "unsigned build"),
    ("run image missing", lambda d, b, m: ["run", str(b), "--input", str(d / "none.png"), "--trust",
                                           str(b.parent / "key.pub")], "unsigned build"),
    ("run manifest bad part name", lambda d, b, m: ["run", manifest_edit(
        b, d, lambda x: first_part(x).update(name="s0_zz"))], "is not a part name"),
    ("run manifest shape edited huge", lambda d, b, m: ["run", manifest_edit(
        b, d, lambda x: x["model"]["input"].update(shape=[1, 3, 100000, 100000]))], "model.input.shape"),
    # schedule
    ("schedule workload missing", lambda d, b, m: ["schedule", "--workload", str(d / "w.yaml")], "does not exist"),
    ("schedule workload bad YAML", lambda d, b, m: ["schedule", "--workload", topology(d, "tasks: [\n")],
     "not valid YAML"),
    ("schedule unknown policy", lambda d, b, m: ["schedule", "--workload", WORKLOAD, "--policy", "luck"], "luck"),
    ("schedule check with -o", lambda d, b, m: ["schedule", "--workload", WORKLOAD, "--check", plan_file(d, "{}"),
                                                "-o", str(d / "s.json")], "--check"),
    ("schedule -o exists", lambda d, b, m: ["schedule", "--workload", WORKLOAD, "-o", plan_file(d, "{}")],
     "use --force"),
    # train-plan and train
    ("train-plan batch zero", lambda d, b, m: ["train-plan", "lenet5", "--topology", HIERTRAIN, "--batch", "0"],
     "--batch"),
    ("train-plan topology missing", lambda d, b, m: ["train-plan", "lenet5", "--topology", str(d / "t.yaml"),
                                                     "--batch", "4"], "does not exist"),
    ("train-plan -o exists", lambda d, b, m: ["train-plan", "lenet5", "--topology", HIERTRAIN, "--batch", "4",
                                              "-o", plan_file(d, "{}")], "use --force"),
    ("train plan not JSON", lambda d, b, m: ["train", "lenet5", "--topology", HIERTRAIN, "--plan",
                                             plan_file(d, "{")], "not JSON"),
    # verify and keygen
    ("verify plan missing", lambda d, b, m: ["verify", "lenet5", "--plan", str(d / "p.json")], "does not exist"),
    ("verify tiles not a grid", lambda d, b, m: ["verify", "lenet5", "--tiles", "2y2", "--fuse-until", "_0"],
     "2y2"),
    ("verify unknown layer", lambda d, b, m: ["verify", "lenet5", "--tiles", "2x2", "--fuse-until", "ghost"],
     "ghost"),
    ("keygen exists", lambda d, b, m: ["keygen", plan_file(d, "x")], "use --force"),
    ("keygen under a file", lambda d, b, m: ["keygen", plan_file(d, "x") + "/k"], "p.json"),
    # testbed (refused before anything is made)
    ("testbed down unknown", lambda d, b, m: ["testbed", "down", "--name", "nosuchbed"], "no state file"),
    ("testbed up bad name", lambda d, b, m: ["testbed", "up", TOPOLOGY, "--name", "Bad Name"], "--name"),
    ("testbed up topology missing", lambda d, b, m: ["testbed", "up", str(d / "t.yaml")], "does not exist"),
    ("testbed profile unknown", lambda d, b, m: ["testbed", "profile", "lenet5", "--name", "nosuchbed", "-o",
                                                 str(d / "p")], "no state file"),
    ("testbed profile shape", lambda d, b, m: ["testbed", "profile", "lenet5", "--input-shape", "a", "-o",
                                               str(d / "p")], "input shape"),
    ("testbed up cpu scale zero", lambda d, b, m: ["testbed", "up", TOPOLOGY, "--cpu-scale", "0"], "--cpu-scale"),
    ("tune trials zero", lambda d, b, m: ["tune", "lenet5", "--topology", TOPOLOGY, "--trials", "0"], "--trials"),
    ("tune target unknown", lambda d, b, m: ["tune", "lenet5", "--topology", TOPOLOGY, "--target", "riscv"],
     "invalid choice"),
    ("tune aarch64 here", lambda d, b, m: ["tune", "lenet5", "--topology", TOPOLOGY, "--target", "aarch64"], "qemu"),
    ("tune no topology", lambda d, b, m: ["tune", "lenet5"], "--topology"),
    ("tune topology missing", lambda d, b, m: ["tune", "lenet5", "--topology", str(d / "t.yaml")], "t.yaml"),
]


def test_the_table_covers_every_command_with_at_least_80_cases():
    from halocut.compiler.cli import build_parser

    commands = {argv(None, None, None)[0] for _, argv, _ in CASES if _static(argv)} | \
        {label.split()[0] for label, _, _ in CASES}
    parser_commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert len(CASES) >= 80 and parser_commands - {"demo"} <= commands | {"topology"}, parser_commands - commands


def _static(argv) -> bool:
    try:
        return bool(argv(None, None, None))
    except Exception:
        return False


@pytest.mark.parametrize("label", [label for label, _, _ in CASES])
def test_a_hostile_input_is_one_line_exit_2_and_leaves_nothing(label, build, tmp_path, capsys):
    _, argv, message = next(case for case in CASES if case[0] == label)
    marker = tmp_path.parent / f"{tmp_path.name}.marker"
    args = argv(tmp_path, build, marker)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capsys.readouterr()
    start = time.monotonic()
    code = main(args)
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2, (args, err)
    assert err.count("\n") == 1 and err.startswith("halocut: error: ") and "\x1b" not in err, err  # no colour codes
    assert message in err, err
    assert elapsed < 10, elapsed
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing left behind
    assert not marker.exists() and not os.path.exists("p.pt.marker")
