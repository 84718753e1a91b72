"""Issue 18, items 11, 13 and 16: counts below their minimum, and NaN or infinite figures, are one-line errors."""

import pytest

from halocut.compiler import cli
from tests.support import ROOT

DEFAULT = (ROOT / "examples/topologies/default.yaml").read_text()

COUNTS = [
    (["simulate", "lenet5", "--topology", "t.yaml", "--requests", "-3"], "--requests: -3: must be at least 1"),
    (["profile", "lenet5", "--repeats", "0"], "--repeats: 0: must be at least 1"),
    (["run", "build/x", "--threads", "-1"], "--threads: -1: must be at least 1"),
    (["run", "build/x", "--window", "0"], "--window: 0: must be at least 1"),
    (["bench", "build/x", "--warmup", "-1"], "--warmup: -1: must be at least 0"),
    (["train-plan", "lenet5", "--topology", "t", "--batch", "4", "--compress-bits", "40"], "must be from 1 to 32"),
    (["train", "lenet5", "--topology", "t", "--plan", "p", "--lr", "nan"], "--lr: nan: must be a finite number"),
    (["schedule", "--workload", "w", "--time-scale", "inf"], "--time-scale: inf: must be a finite number"),
    (["compile", "lenet5", "--topology", "t", "--tune", "x"], "--tune: 'x' is not a whole number"),
    (["tune", "lenet5", "--topology", "t", "--trials", "-2"], "--trials: -2: must be at least 1"),
]

FIGURES = [
    ("bandwidth: 1Gbps", "bandwidth: 1e999Gbps", "'1e999Gbps' is not a finite number"),
    ("latency: 30ms", "latency: .nan", "is not a finite number"),
    ("latency: 30ms", "latency: 1e999s", "'1e999s' is not a finite number"),
    ("{name: cloud, role: cloud, kind: tesla-t4}",
     "{name: cloud, role: cloud, figures: {class: gpu, peak_flops: 1e999, memory_bytes: 1e9, "
     "memory_bandwidth_bytes_per_s: 1e9, backend: torch, cuda_arch: null}}", "is not a finite number"),
]


@pytest.mark.parametrize("argv, message", COUNTS)
def test_counts_below_their_minimum_are_refused(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("halocut: error:") and message in err[0]


@pytest.mark.parametrize("old, new, message", FIGURES)
def test_non_finite_figures_in_a_topology_are_refused(old, new, message, tmp_path, capsys):
    assert old in DEFAULT
    path = tmp_path / "bad.yaml"
    path.write_text(DEFAULT.replace(old, new, 1))
    assert cli.main(["topology", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and message in err[0], err
