"""``halocut verify`` (issue 12, item 9): a plan or an FTP grid beside the model; error, halo FLOPs, bytes."""

import json

import pytest

from halocut.compiler import cli
from halocut.compiler.prepare import prepare_model
from halocut.ir.segments import grid_tiles, plan

NOISY = '''
import torch
from torch import nn


class Noisy(nn.Module):
    """Adds fresh noise on every call: no split run can reproduce another run of it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y + torch.rand_like(y)


def build():
    return Noisy()
'''


def verify(capsys, *args):
    code = cli.main(["verify", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_fused_tiles_report_error_halo_flops_and_bytes(capsys):
    code, one = verify(capsys, "lenet5", "--tiles", "1x1", "--fuse-until", "_5")
    assert code == 0 and one["ok"] and one["halo_flop_overhead"] == 0 and one["parts"] == 2
    code, four = verify(capsys, "lenet5", "--tiles", "2x2", "--fuse-until", "_5")
    assert code == 0 and four["ok"] and four["max_abs_error"] <= four["tolerance"] and four["parts"] == 5
    code, sixteen = verify(capsys, "lenet5", "--tiles", "4x4", "--fuse-until", "_5")
    assert 0 < four["halo_flop_overhead"] < sixteen["halo_flop_overhead"]  # smaller tiles: more overlap
    assert one["bytes_moved"] < four["bytes_moved"] < sixteen["bytes_moved"]  # overlapping crops are read twice
    assert set(four) >= {"ok", "max_abs_error", "halo_flop_overhead", "bytes_moved"}


def test_a_plan_file_is_verified(tmp_path, capsys):
    prepared = prepare_model("resnet18", (1, 3, 64, 64))
    hand = plan(prepared.graph, "resnet18", (1, 3, 64, 64), [("spatial", "layer1_1_relu_1", grid_tiles(16, 16, [5], [9])),
                                                              ("single", None, 2)])
    hand.save(tmp_path / "plan.json")
    code, report = verify(capsys, "resnet18", "--plan", str(tmp_path / "plan.json"), "--input-shape", "1,3,64,64")
    assert code == 0 and report["ok"] and report["halo_flop_overhead"] > 0 and report["stages"] == 2


def test_a_model_the_split_cannot_reproduce_exits_1(tmp_path, capsys):
    (tmp_path / "noisy.py").write_text(NOISY)
    code = cli.main(["verify", f"{tmp_path / 'noisy.py'}:build", "--input-shape", "1,3,16,16", "--tiles", "2x2",
                     "--fuse-until", "conv"])
    assert code == 1 and "NOT equivalent" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--tiles", "2x2"], "--tiles needs --fuse-until"),
    (["--tiles", "2x2", "--fuse-until", "_5", "--plan", "p.json"], "either --plan or --tiles"),
    ([], "either --plan or --tiles"),
    (["--tiles", "2x2", "--fuse-until", "conv9"], "no layer named 'conv9'"),
    (["--tiles", "2x0", "--fuse-until", "_5"], "must be positive"),
    (["--tiles", "9x9", "--fuse-until", "_5"], "is only 5x5"),
    (["--tiles", "2x2", "--fuse-until", "_9"], "not a feature map"),
    (["--plan", "missing.json"], "missing.json: file does not exist"),
])
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    assert cli.main(["verify", "lenet5", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("halocut: error:") and message in err[0]
