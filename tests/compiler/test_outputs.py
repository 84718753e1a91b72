"""Issue 18, items 5 and 8: one rule for every command's output. An existing file is refused without --force,
before any work (a bench does not lose its timings), on one line naming the path; a place no file can be made is
one line too; with --force the file is replaced whole."""

import pytest

from halocut.compiler.cli import main
from tests.support import ROOT

TOPOLOGY = str(ROOT / "examples/topologies/default.yaml")
WORKLOAD = str(ROOT / "examples/workloads/small.yaml")


def commands(out):
    return {
        "plan -o": ["plan", "lenet5", "--topology", TOPOLOGY, "-o", out],
        "simulate --gantt": ["simulate", "lenet5", "--topology", TOPOLOGY, "--gantt", out],
        "profile -o": ["profile", "lenet5", "--repeats", "1", "-o", out],
        "profile --training -o": ["profile", "lenet5", "--training", "--repeats", "1", "-o", out],
        "bench -o": ["bench", str(ROOT / "no-such-build"), "-o", out],
        "schedule -o": ["schedule", "--workload", WORKLOAD, "-o", out],
        "schedule --gantt": ["schedule", "--workload", WORKLOAD, "--gantt", out],
        "train-plan -o": ["train-plan", "lenet5", "--topology", str(ROOT / "examples/topologies/hiertrain.yaml"),
                          "--batch", "16", "-o", out],
    }


@pytest.mark.parametrize("name", sorted(commands("x")))
def test_an_existing_output_is_refused_without_force_before_any_work(name, tmp_path, capsys):
    existing = tmp_path / "existing.out"
    existing.write_text("keep me")
    assert main(commands(str(existing))[name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{existing} exists; use --force to replace it" in err
    assert existing.read_text() == "keep me"
    blocked = tmp_path / "existing.out" / "inside.json"  # a file where a folder must be
    assert main(commands(str(blocked))[name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder" in err


@pytest.mark.parametrize("name", ["plan -o", "simulate --gantt", "schedule -o", "schedule --gantt"])
def test_with_force_the_output_is_replaced_whole(name, tmp_path, capsys):
    existing = tmp_path / "existing.out"
    existing.write_text("old")
    assert main(commands(str(existing))[name] + ["--force"]) == 0
    assert existing.read_bytes() != b"old" and not list(tmp_path.glob(".existing.out.*"))
