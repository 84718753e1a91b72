"""Tuning into the shared database: trials follow FLOPs, a kernel is tuned once, hits are reported, the tuned
library is right, and halocut tune / compile --tune reuse what was tuned before."""

import random

import numpy as np
import pytest
import torch
from torch import fx, nn

from halocut.backends import tvm as backend, tvm_tune
from halocut.backends.base import Part, Target
from halocut.compiler.cli import main
from halocut.compiler.commands import tune_model
from halocut.compiler.driver import CompileOptions, compile_model
from halocut.ir.errors import HalocutError

from tests.support import ROOT

X86 = Target("tvm", {"kind": "llvm"})
TOPOLOGY = ROOT / "examples/topologies/default.yaml"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test starts with an empty cache, so an empty shared tuning database."""
    monkeypatch.setenv("HALOCUT_CACHE", str(tmp_path / "cache"))
    reason = backend.tuning_unavailable()
    if reason is not None:
        pytest.fail(reason)
    return tmp_path / "cache"


def conv_part(name="s0", rows=8, seed=0):
    """A tile: conv + relu on ``rows`` input rows; weights drawn from ``seed``."""
    torch.manual_seed(seed)
    module = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()))
    return Part(name, module, (torch.randn(1, 3, rows, 8),), ("x",), ("y",))


def test_trials_follow_flops_and_sum_to_the_budget():
    rng = random.Random(14)
    for _ in range(200):
        flops = [rng.choice([1.0, 10.0, 1e3, 1e6]) * rng.random() + 1 for _ in range(rng.randint(1, 12))]
        trials = rng.randint(0, 300)
        shares = tvm_tune.split_trials(flops, trials)
        if trials == 0:
            assert shares == [0] * len(flops)
            continue
        assert min(shares) >= 1
        assert sum(shares) == (trials if trials >= len(flops) else len(flops))
        heaviest, lightest = flops.index(max(flops)), flops.index(min(flops))
        assert shares[heaviest] >= shares[lightest]


def test_tuning_twice_tunes_nothing_the_second_time(tmp_path):
    part = conv_part()
    first = tvm_tune.tune(part, X86, trials=4)
    assert first.database == tmp_path / "cache" / "tune" / "x86"
    assert first.hits == 0 and first.trials_run == 4
    assert all(t.best_s is not None and t.best_s < 1.0 for t in first.tasks)
    second = tvm_tune.tune(part, X86, trials=4)
    assert second.hits == len(second.tasks) == len(first.tasks)
    assert second.trials_run == 0
    assert "0 tuned (0 trials)" in second.summary()


def test_the_same_workload_elsewhere_is_a_hit_another_shape_is_not():
    tvm_tune.tune(conv_part("s0_t0_h0", rows=8, seed=0), X86, trials=4)
    same = tvm_tune.tune(conv_part("s0_t1_h0", rows=8, seed=1), X86, trials=4)  # another tile, as high, other weights
    assert same.hits == len(same.tasks) and same.trials_run == 0
    taller = tvm_tune.tune(conv_part("s0_t2_h0", rows=12, seed=0), X86, trials=4)
    assert taller.hits == 0 and taller.trials_run == 4


def test_a_larger_budget_tops_up_and_the_tuned_library_is_right(tmp_path):
    part = conv_part()
    tvm_tune.tune(part, X86, trials=2)
    more = tvm_tune.tune(part, X86, trials=5)
    assert [(t.trials_before, t.trials_run) for t in more.tasks] == [(2, 3)]
    artifact = backend.emit(part, X86, tmp_path / "out", tuning_database=more.database)
    (got,) = backend.load(artifact, tmp_path / "out")([x.numpy() for x in part.example_inputs])
    (want,) = part.example_outputs()
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=0, atol=1e-4 * max(1.0, float(want.abs().max())))


def test_a_machine_that_cannot_run_the_target_is_refused():
    aarch64 = Target("tvm", {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    with pytest.raises(HalocutError, match="cannot run that target"):
        tvm_tune.tune(conv_part(), aarch64, trials=2)


def test_halocut_tune_for_aarch64_is_one_line(capsys):
    assert main(["tune", "lenet5", "--topology", str(TOPOLOGY), "--target", "aarch64"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("halocut: error: cannot tune for aarch64") and "qemu" in error
    assert error.count("\n") == 1


def test_halocut_tune_then_compile_tune_reuses_the_database(tmp_path, capsys):
    first = tune_model("lenet5", TOPOLOGY, trials=2, progress=False)
    assert first and sum(r.trials_run for r in first) > 0
    assert main(["tune", "lenet5", "--topology", str(TOPOLOGY), "--trials", "2"]) == 0
    printed = capsys.readouterr().out
    kernels = sum(len(r.tasks) for r in first)
    assert f"{kernels} found in the database, 0 tuned (0 trials)" in printed
    compilation = compile_model(CompileOptions("lenet5", TOPOLOGY, tmp_path / "build", backends=("tvm",),
                                               progress=False, tune=2))
    assert compilation.tuning and all(r.trials_run == 0 for r in compilation.tuning)
